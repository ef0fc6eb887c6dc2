#include "engine/threads.h"

#include <omp.h>

#include "Eigen/Core"

namespace mixq::engine {

void SetEngineThreads(int threads) {
  if (threads <= 0) return;
  Eigen::setNbThreads(threads);
  omp_set_num_threads(threads);
}

}  // namespace mixq::engine
