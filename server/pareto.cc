#include "server/pareto.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace mixq::server {
namespace {

// The validation quality a front is built on, higher better: accuracy, or
// for label-free policies the negated validation loss (the distance to the
// FP32 model's outputs).
using Quality = double (*)(const v1::Policy&);
double Accuracy(const v1::Policy& p) { return p.val_accuracy(); }
double NegatedLoss(const v1::Policy& p) { return -p.val_loss(); }

bool Dominates(const v1::Policy& p, const v1::Policy& q, Quality quality) {
  const bool no_worse = p.size_bytes() <= q.size_bytes() &&
                        p.bops() <= q.bops() && quality(p) >= quality(q);
  const bool better = p.size_bytes() < q.size_bytes() || p.bops() < q.bops() ||
                      quality(p) > quality(q);
  return no_worse && better;
}

bool SamePoint(const v1::Policy& p, const v1::Policy& q, Quality quality) {
  return p.size_bytes() == q.size_bytes() && p.bops() == q.bops() &&
         quality(p) == quality(q);
}

}  // namespace

std::vector<v1::Policy> ParetoFront(std::vector<v1::Policy> policies) {
  const bool any_accuracy = std::any_of(
      policies.begin(), policies.end(),
      [](const v1::Policy& p) { return !std::isnan(p.val_accuracy()); });
  const Quality quality = any_accuracy ? Accuracy : NegatedLoss;
  std::erase_if(policies, [quality](const v1::Policy& p) {
    return std::isnan(quality(p));
  });
  std::vector<v1::Policy> front;
  for (size_t i = 0; i < policies.size(); ++i) {
    bool kept = true;
    for (size_t j = 0; j < policies.size() && kept; ++j) {
      if (j == i) continue;
      if (Dominates(policies[j], policies[i], quality) ||
          (j < i && SamePoint(policies[j], policies[i], quality))) {
        kept = false;
      }
    }
    if (kept) front.push_back(policies[i]);
  }
  std::stable_sort(front.begin(), front.end(),
                   [quality](const v1::Policy& a, const v1::Policy& b) {
                     if (a.size_bytes() != b.size_bytes())
                       return a.size_bytes() < b.size_bytes();
                     if (a.bops() != b.bops()) return a.bops() < b.bops();
                     return quality(a) > quality(b);
                   });
  return front;
}

}  // namespace mixq::server
