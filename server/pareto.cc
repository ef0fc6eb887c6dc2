#include "server/pareto.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace mixq::server {
namespace {

bool Dominates(const v1::Policy& p, const v1::Policy& q) {
  const bool no_worse = p.size_bytes() <= q.size_bytes() &&
                        p.bops() <= q.bops() &&
                        p.val_accuracy() >= q.val_accuracy();
  const bool better = p.size_bytes() < q.size_bytes() || p.bops() < q.bops() ||
                      p.val_accuracy() > q.val_accuracy();
  return no_worse && better;
}

bool SamePoint(const v1::Policy& p, const v1::Policy& q) {
  return p.size_bytes() == q.size_bytes() && p.bops() == q.bops() &&
         p.val_accuracy() == q.val_accuracy();
}

}  // namespace

std::vector<v1::Policy> ParetoFront(std::vector<v1::Policy> policies) {
  std::erase_if(policies, [](const v1::Policy& p) {
    return std::isnan(p.val_accuracy());
  });
  std::vector<v1::Policy> front;
  for (size_t i = 0; i < policies.size(); ++i) {
    bool kept = true;
    for (size_t j = 0; j < policies.size() && kept; ++j) {
      if (j == i) continue;
      if (Dominates(policies[j], policies[i]) ||
          (j < i && SamePoint(policies[j], policies[i]))) {
        kept = false;
      }
    }
    if (kept) front.push_back(policies[i]);
  }
  std::stable_sort(front.begin(), front.end(),
                   [](const v1::Policy& a, const v1::Policy& b) {
                     if (a.size_bytes() != b.size_bytes())
                       return a.size_bytes() < b.size_bytes();
                     if (a.bops() != b.bops()) return a.bops() < b.bops();
                     return a.val_accuracy() > b.val_accuracy();
                   });
  return front;
}

}  // namespace mixq::server
