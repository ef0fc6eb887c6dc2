// The service's defaults are written once (proto/spec_defaults.h): the
// stored spec gets them, and the proto's comments and the README's table
// must say the same values.
#include "proto/spec_defaults.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "server/job_spec.h"

namespace mixq::server {
namespace {

std::string ReadSourceFile(const std::string& relative) {
  std::ifstream in(absl::StrCat(MIXQ_SOURCE_DIR, "/", relative));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

v1::JobSpec SpecWithLabels() {
  v1::JobSpec spec;
  spec.mutable_labels()->set_filename("y.npy");
  spec.mutable_search()->add_bits(4);
  spec.mutable_search()->mutable_budget()->set_avg_bits(4);
  return spec;
}

TEST(FillSpecDefaultsTest, EveryUnsetSearchOptionGetsItsDefault) {
  v1::JobSpec spec = SpecWithLabels();
  ASSERT_TRUE(FillSpecDefaults(&spec).ok());
  const v1::SearchOptions& s = spec.search();
  EXPECT_EQ(s.candidates(), spec_defaults::kCandidates);
  EXPECT_EQ(s.max_layers(), spec_defaults::kMaxLayers);
  EXPECT_EQ(s.finetune_steps(), spec_defaults::kFinetuneSteps);
  EXPECT_EQ(s.warmup_steps(), spec_defaults::kFinetuneSteps);
  EXPECT_EQ(s.final_finetune_steps(), spec_defaults::kFinetuneSteps);
  EXPECT_EQ(s.learning_rate(), spec_defaults::kLearningRate);
  EXPECT_EQ(s.batch_size(), spec_defaults::kBatchSize);
  EXPECT_TRUE(s.has_lambda());
  EXPECT_EQ(s.lambda(), spec_defaults::kLambda);
  EXPECT_TRUE(s.has_activation_bits());
  EXPECT_EQ(s.activation_bits(), spec_defaults::kActivationBits);
  EXPECT_EQ(s.strategy(), spec_defaults::kStrategy);
  EXPECT_EQ(s.selection(), spec_defaults::kSelection);
  EXPECT_EQ(s.hutchinson_samples(), spec_defaults::kHutchinsonSamples);
  EXPECT_EQ(spec.objective(), "cross_entropy");

  // What was filled runs exactly as what was left unset.
  const auto filled = ToProgressiveOptions(s);
  const auto unset = ToProgressiveOptions(SpecWithLabels().search());
  ASSERT_TRUE(filled.ok() && unset.ok());
  EXPECT_EQ(filled->candidates, unset->candidates);
  EXPECT_EQ(filled->warmup_steps, unset->warmup_steps);
  EXPECT_EQ(filled->learning_rate, unset->learning_rate);
  EXPECT_EQ(filled->strategy, unset->strategy);
  EXPECT_EQ(filled->selection, unset->selection);
  EXPECT_EQ(filled->hutchinson_samples, unset->hutchinson_samples);
  EXPECT_EQ(filled->activation_bits, unset->activation_bits);
}

TEST(FillSpecDefaultsTest, SetValuesAndZeroStepsAreKept) {
  v1::JobSpec spec = SpecWithLabels();
  v1::SearchOptions* s = spec.mutable_search();
  s->set_candidates(3);
  s->set_finetune_steps(7);
  s->set_warmup_steps(0);  // a valid value, not "unset"
  s->set_lambda(0);
  s->set_strategy("knapsack");
  s->set_learning_rate(1e-3);
  ASSERT_TRUE(FillSpecDefaults(&spec).ok());
  EXPECT_EQ(s->candidates(), 3);
  EXPECT_EQ(s->finetune_steps(), 7);
  EXPECT_EQ(s->warmup_steps(), 0);
  EXPECT_EQ(s->final_finetune_steps(), 7);  // follows finetune_steps
  EXPECT_EQ(s->lambda(), 0);
  EXPECT_EQ(s->strategy(), "knapsack");
  EXPECT_EQ(s->learning_rate(), 1e-3);
}

TEST(FillSpecDefaultsTest, TheObjectiveIsResolved) {
  v1::JobSpec without_labels;
  ASSERT_TRUE(FillSpecDefaults(&without_labels).ok());
  EXPECT_EQ(without_labels.objective(), "distill");

  v1::JobSpec bad = SpecWithLabels();
  bad.set_objective("mse");
  const absl::Status status = FillSpecDefaults(&bad);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "spec.objective")) << status;
}

// search::ProgressiveOptions, the search library's own defaults (for its
// direct users: benchmarks, tests), agree with the service's, except the
// strategy: the library's plain loop is kProgressive.
TEST(FillSpecDefaultsTest, TheSearchLibraryDefaultsAgree) {
  const search::ProgressiveOptions library;
  EXPECT_EQ(library.candidates, spec_defaults::kCandidates);
  EXPECT_EQ(library.max_layers, spec_defaults::kMaxLayers);
  EXPECT_EQ(library.finetune_steps, spec_defaults::kFinetuneSteps);
  EXPECT_EQ(library.warmup_steps, spec_defaults::kFinetuneSteps);
  EXPECT_EQ(library.final_finetune_steps, spec_defaults::kFinetuneSteps);
  EXPECT_EQ(library.learning_rate, spec_defaults::kLearningRate);
  EXPECT_EQ(library.batch_size, spec_defaults::kBatchSize);
  EXPECT_EQ(library.lambda, spec_defaults::kLambda);
  EXPECT_EQ(library.activation_bits, spec_defaults::kActivationBits);
  EXPECT_EQ(library.hutchinson_samples, spec_defaults::kHutchinsonSamples);
  EXPECT_EQ(search::ParseStrategy(spec_defaults::kStrategy).value(),
            search::Strategy::kAuto);
}

// The comment of the field declared by `declaration` in `proto`: its
// trailing comment and the `//` lines right above it.
std::string FieldComment(const std::string& proto,
                         const std::string& declaration) {
  const std::vector<std::string> lines = absl::StrSplit(proto, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!absl::StrContains(lines[i], declaration)) continue;
    std::string comment;
    for (size_t j = i; j-- > 0;) {
      absl::string_view line = absl::StripAsciiWhitespace(lines[j]);
      if (!absl::ConsumePrefix(&line, "//")) break;
      comment = absl::StrCat(absl::StripAsciiWhitespace(line), " ", comment);
    }
    const size_t trailing = lines[i].find("//");
    if (trailing != std::string::npos)
      absl::StrAppend(&comment, lines[i].substr(trailing + 2));
    return comment;
  }
  return "";
}

struct Documented {
  const char* proto_declaration;  // in proto/mixq.proto
  const char* flag;               // the README table's first column
  std::string value;              // as both write it
};

std::vector<Documented> DocumentedDefaults() {
  return {
      {"int32 candidates = 3;", "--candidates",
       absl::StrCat(spec_defaults::kCandidates)},
      {"int32 max_layers = 4;", "--max-layers",
       absl::StrCat(spec_defaults::kMaxLayers)},
      {"int32 finetune_steps = 5;", "--finetune-steps",
       absl::StrCat(spec_defaults::kFinetuneSteps)},
      {"double learning_rate = 8;", "--lr",
       absl::StrCat(spec_defaults::kLearningRate)},
      {"int32 batch_size = 9;", "--batch-size",
       absl::StrCat(spec_defaults::kBatchSize)},
      {"double lambda = 10;", "--lambda", absl::StrCat(spec_defaults::kLambda)},
      {"int32 activation_bits = 14;", "--activation-bits",
       absl::StrCat(spec_defaults::kActivationBits)},
      {"string strategy = 15;", "--strategy", spec_defaults::kStrategy},
      {"string selection = 16;", "--selection", spec_defaults::kSelection},
      {"int32 hutchinson_samples = 20;", "--hutchinson-samples",
       absl::StrCat(spec_defaults::kHutchinsonSamples)},
  };
}

TEST(DocumentedDefaultsTest, TheProtoCommentsSayTheDefaults) {
  const std::string proto = ReadSourceFile("proto/mixq.proto");
  ASSERT_FALSE(proto.empty());
  for (const Documented& d : DocumentedDefaults()) {
    const std::string comment = FieldComment(proto, d.proto_declaration);
    ASSERT_FALSE(comment.empty()) << d.proto_declaration;
    const bool quoted = absl::StrContains(d.proto_declaration, "string ");
    const std::string expected = quoted
                                     ? absl::StrCat("default \"", d.value, "\"")
                                     : absl::StrCat("default ", d.value);
    EXPECT_TRUE(absl::StrContains(comment, expected))
        << d.proto_declaration << ": '" << comment << "' lacks '" << expected
        << "'";
  }
  EXPECT_TRUE(absl::StrContains(FieldComment(proto, "int32 warmup_steps = 6;"),
                                "default finetune_steps"));
  EXPECT_TRUE(
      absl::StrContains(FieldComment(proto, "int32 final_finetune_steps = 7;"),
                        "default finetune_steps"));
  // The validation fields share one comment, above val_inputs.
  EXPECT_TRUE(absl::StrContains(
      FieldComment(proto, "DataSource val_inputs = 9;"),
      absl::StrCat("the last ", spec_defaults::kValidationPercent,
                   " % of the samples")));
}

TEST(DocumentedDefaultsTest, TheReadmeTableSaysTheDefaults) {
  const std::string readme = ReadSourceFile("README.md");
  ASSERT_FALSE(readme.empty());
  std::vector<Documented> rows = DocumentedDefaults();
  rows.push_back({"", "--val-size",
                  absl::StrCat(spec_defaults::kValidationPercent, " %")});
  for (const Documented& d : rows) {
    const std::string prefix = absl::StrCat("| `", d.flag, "` |");
    bool found = false;
    for (absl::string_view line : absl::StrSplit(readme, '\n')) {
      if (!absl::StartsWith(line, prefix)) continue;
      found = true;
      const std::vector<std::string> cells = absl::StrSplit(line, '|');
      ASSERT_GE(cells.size(), 4u) << line;
      EXPECT_EQ(absl::StripAsciiWhitespace(cells[cells.size() - 2]), d.value)
          << line;
    }
    EXPECT_TRUE(found) << "README.md has no row " << prefix;
  }
}

}  // namespace
}  // namespace mixq::server
