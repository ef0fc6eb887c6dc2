#include "server/resolve.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "search/allocation.h"
#include "search/cost_model.h"
#include "search/progressive.h"
#include "server/job_spec.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

// Jobs record their FP32 size (CostModel::Fp32SizeBytes): 4 bytes a
// parameter.
constexpr double kFp32BytesPerParam = 4;

struct Limit {
  search::Budget budget;
  const char* field;
};

// The one limit of `request`. INVALID_ARGUMENT naming the fields otherwise.
absl::StatusOr<Limit> OneLimit(const v1::QueryBestPoliciesRequest& request) {
  std::vector<Limit> limits;
  if (request.max_avg_bits() > 0) {
    limits.push_back({{search::Budget::Kind::kAvgBits, request.max_avg_bits()},
                      "max_avg_bits"});
  }
  if (request.max_size_bytes() > 0) {
    limits.push_back({{search::Budget::Kind::kBytes, request.max_size_bytes()},
                      "max_size_bytes"});
  }
  if (request.max_bops() > 0) {
    limits.push_back(
        {{search::Budget::Kind::kBops, request.max_bops()}, "max_bops"});
  }
  if (limits.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_avg_bits, max_size_bytes, max_bops: resolve takes exactly one "
        "limit, got ",
        limits.size()));
  }
  return limits.front();
}

// The job's cost model from its stored layers and FP32 size. DATA_LOSS for
// figures no model has.
absl::StatusOr<search::CostModel> StoredCostModel(
    const storage::JobRecord& job,
    const std::vector<storage::LayerRecord>& layers) {
  std::vector<search::CostModel::Layer> cost_layers;
  int64_t quantizable = 0;
  for (const storage::LayerRecord& layer : layers) {
    if (layer.num_weights < 0 || layer.macs < 0) {
      return absl::DataLossError(absl::StrCat(
          "job ", job.id, ": layer ", layer.name, " has negative figures"));
    }
    cost_layers.push_back({layer.num_weights, layer.macs});
    quantizable += layer.num_weights;
  }
  const double params = job.fp32_size_bytes / kFp32BytesPerParam;
  if (!(params >= static_cast<double>(quantizable) &&
        params < static_cast<double>(std::numeric_limits<int64_t>::max()))) {
    return absl::DataLossError(
        absl::StrCat("job ", job.id, ": FP32 size ", job.fp32_size_bytes,
                     " bytes is below its layers' weights"));
  }
  return search::CostModel(std::move(cost_layers), std::llround(params));
}

}  // namespace

absl::StatusOr<v1::Policy> ResolvePolicy(
    const storage::Store& store, const storage::JobRecord& job,
    const v1::JobSpec& spec, const v1::QueryBestPoliciesRequest& request) {
  MIXQ_ASSIGN_OR_RETURN(const Limit limit, OneLimit(request));
  MIXQ_ASSIGN_OR_RETURN(std::optional<storage::SensitivityRecord> table,
                        store.GetSensitivities(job.id));
  if (!table.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job.id,
        " has no stored sensitivities to re-solve from: its search has not "
        "finished the warm-up, or it ran before mixq stored them"));
  }
  MIXQ_ASSIGN_OR_RETURN(const search::ProgressiveOptions options,
                        ToProgressiveOptions(spec.search()));
  MIXQ_ASSIGN_OR_RETURN(const std::vector<storage::LayerRecord> layers,
                        store.GetLayers(job.id));
  std::vector<std::string> names;
  for (const storage::LayerRecord& layer : layers) names.push_back(layer.name);
  MIXQ_ASSIGN_OR_RETURN(const search::CandidateBits bits,
                        search::ResolveCandidateBits(options, names));
  MIXQ_ASSIGN_OR_RETURN(const search::CostModel cost,
                        StoredCostModel(job, layers));
  const std::vector<int> columns(table->bits.begin(), table->bits.end());
  for (int b : bits.AllBits()) {
    if (std::find(columns.begin(), columns.end(), b) == columns.end()) {
      return absl::DataLossError(absl::StrCat(
          "job ", job.id, ": the stored sensitivities have no column for ", b,
          " bits"));
    }
  }
  // The warm-up's activation bits: the highest searched ones, if searched.
  const int act_bits =
      options.activation_levels.empty()
          ? options.activation_bits
          : *std::max_element(options.activation_levels.begin(),
                              options.activation_levels.end());
  MIXQ_RETURN_IF_ERROR(Annotate(
      search::CheckBudgetReachable(cost, limit.budget, bits.Lowest(), act_bits),
      limit.field));

  const search::Allocator allocator(cost, bits, limit.budget.kind, columns);
  MIXQ_ASSIGN_OR_RETURN(const std::vector<int> level,
                        allocator.Allocate(table->omega, allocator.TopLevels(),
                                           allocator.BottomLevels(),
                                           limit.budget.value, act_bits));
  const search::Policy policy = allocator.PolicyAt(level);
  const search::PolicyCost policy_cost = cost.Cost(policy, act_bits);
  constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
  v1::Policy out;
  for (size_t l = 0; l < policy.size(); ++l) {
    v1::LayerBits* layer = out.add_layers();
    layer->set_name(layers[l].name);
    layer->set_bits(policy[l]);
  }
  out.set_avg_bits(policy_cost.avg_bits);
  out.set_size_bytes(policy_cost.size_bytes);
  out.set_bops(static_cast<double>(policy_cost.bops));
  out.set_activation_bits(act_bits);
  out.set_omega(allocator.Omega(table->omega, policy));
  out.set_accuracy(kNan);
  out.set_loss(kNan);
  out.set_index(kNan);
  out.set_val_accuracy(kNan);
  out.set_val_loss(kNan);
  out.set_kind(kPredictedKind);
  out.set_job_id(job.id);
  out.set_strategy(job.strategy);
  return out;
}

}  // namespace mixq::server
