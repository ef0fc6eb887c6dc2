// The accuracy-vs-cost curve of a search: which kept policies are worth
// deploying at some budget. Pure functions; thread-safe.
#ifndef MIXQ_SERVER_PARETO_H_
#define MIXQ_SERVER_PARETO_H_

#include <vector>

#include "proto/mixq.pb.h"

namespace mixq::server {

// The policies of `policies` that no other one dominates — p dominates q
// when p.size_bytes <= q.size_bytes, p.bops <= q.bops and p's validation
// quality is at least q's, with at least one strict — sorted by size
// ascending (then BOPs, then quality descending). The quality is the
// validation accuracy when any policy has one (those without, NaN, are left
// out); otherwise, for label-free jobs, the validation loss (the distance to
// the FP32 model's outputs; lower is better; NaN left out). Of identical
// points the first given is kept. O(n²), n being the kept policies of a few
// jobs.
std::vector<v1::Policy> ParetoFront(std::vector<v1::Policy> policies);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_PARETO_H_
