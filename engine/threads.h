// How many threads the engine's kernels use.
#ifndef MIXQ_ENGINE_THREADS_H_
#define MIXQ_ENGINE_THREADS_H_

namespace mixq::engine {

// Limits the engine to `threads` threads (> 0): Eigen's GEMM (a process-wide
// setting) and the OpenMP loops of the kernels run by the CALLING thread
// (OpenMP keeps the count per thread, so a worker thread must call this
// itself). 0 leaves the defaults (all cores, or OMP_NUM_THREADS).
void SetEngineThreads(int threads);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_THREADS_H_
