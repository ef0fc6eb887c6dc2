#include "engine/ops_window.h"

#include <algorithm>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

absl::StatusOr<AutoPad> ParseAutoPad(const OpConfig& config) {
  absl::StatusOr<std::string> s = config.GetString("auto_pad", "NOTSET");
  if (!s.ok()) return s.status();
  if (*s == "NOTSET" || s->empty()) return AutoPad::kNotSet;
  if (*s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (*s == "SAME_LOWER") return AutoPad::kSameLower;
  if (*s == "VALID") return AutoPad::kValid;
  return NodeError(config, absl::StrCat("unsupported auto_pad '", *s, "'"));
}

}  // namespace

absl::StatusOr<WindowAttrs> ParseWindow(const OpConfig& config,
                                        bool with_ceil_mode, int* rank) {
  WindowAttrs w;
  *rank = 0;
  const auto read = [&](absl::string_view name, int64_t per_dim,
                        int64_t min_value,
                        std::vector<int64_t>* out) -> absl::Status {
    absl::StatusOr<std::optional<std::vector<int64_t>>> v =
        config.GetInts(name);
    if (!v.ok()) return v.status();
    if (!v->has_value()) return absl::OkStatus();
    *out = **v;
    if (out->size() % per_dim != 0 || out->empty()) {
      return NodeError(config,
                       absl::StrCat(name, " has ", out->size(), " values"));
    }
    const int r = static_cast<int>(out->size() / per_dim);
    if (*rank != 0 && r != *rank) {
      return NodeError(config, absl::StrCat(name, " has ", out->size(),
                                            " values; other attributes imply ",
                                            *rank, " spatial dims"));
    }
    *rank = r;
    for (int64_t x : *out) {
      if (x < min_value) {
        return NodeError(config,
                         absl::StrCat(name, " [", absl::StrJoin(*out, ", "),
                                      "] must be >= ", min_value));
      }
      if (x > kMaxWindowAttribute) {
        return NodeError(config,
                         absl::StrCat(name, " [", absl::StrJoin(*out, ", "),
                                      "] must be <= ", kMaxWindowAttribute,
                                      " (kMaxWindowAttribute)"));
      }
    }
    return absl::OkStatus();
  };
  for (const absl::Status& s :
       {read("kernel_shape", 1, 1, &w.kernel),
        read("strides", 1, 1, &w.strides),
        read("dilations", 1, 1, &w.dilations), read("pads", 2, 0, &w.pads)}) {
    if (!s.ok()) return s;
  }
  absl::StatusOr<AutoPad> auto_pad = ParseAutoPad(config);
  if (!auto_pad.ok()) return auto_pad.status();
  w.auto_pad = *auto_pad;
  if (w.auto_pad != AutoPad::kNotSet && !w.pads.empty() &&
      std::any_of(w.pads.begin(), w.pads.end(),
                  [](int64_t p) { return p != 0; })) {
    return NodeError(config, "pads and auto_pad cannot both be given");
  }
  if (with_ceil_mode) {
    absl::StatusOr<int64_t> ceil_mode = config.GetInt("ceil_mode", 0);
    if (!ceil_mode.ok()) return ceil_mode.status();
    if (*ceil_mode != 0 && *ceil_mode != 1) {
      return NodeError(config,
                       absl::StrCat("unsupported ceil_mode ", *ceil_mode));
    }
    w.ceil_mode = *ceil_mode == 1;
  }
  return w;
}

WindowAttrs LiftTo2d(WindowAttrs w) {
  const auto lift = [](std::vector<int64_t>* v, int64_t unit) {
    if (v->size() == 1) v->insert(v->begin(), unit);
  };
  lift(&w.kernel, 1);
  lift(&w.strides, 1);
  lift(&w.dilations, 1);
  if (w.pads.size() == 2) w.pads = {0, w.pads[0], 0, w.pads[1]};
  return w;
}

}  // namespace mixq::engine
