#!/usr/bin/env bash
# Builds mixq-bench (Release), times mixq and PyTorch on the same models at the
# same batch and thread count, and prints mixq/PyTorch throughput ratios
# (inference and train step, per model; > 1 means mixq faster).
#
#   scripts/bench.sh [MODEL.onnx...]     default: the MLP and CNN fixtures
#   scripts/bench.sh --real              (or REAL=1) the real-shape bench of
#                                        issue #17, see below
#
# Environment: BUILD_DIR (default build-bench), BATCH (128), THREADS (2),
# MIN_TIME (seconds per measurement, 2), LAYERS (1: per-Conv-layer table).
# Needs `scripts/install-deps.sh --python` for PyTorch (+ OpenBLAS).
#
# --real: ResNet-18/50, MobileNetV3-L, EfficientNet-B0 and DenseNet-121 at
# 3x224x224 (bench/make_real_models.py exports them into REAL_DIR, default
# $BUILD_DIR/real, if missing), timed by mixq, PyTorch and ONNX Runtime
# (bench/ort_bench.js; tools/ort/node_modules) at each batch of REAL_BATCHES
# (default "1 32") for inference and at TRAIN_BATCH (32) for a train step,
# one process per model, engine and batch; then one table in ms per batch with
# the ratios (> 1: mixq faster) and each engine's peak RSS. BATCH is unused.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}
BATCH=${BATCH:-128}
THREADS=${THREADS:-2}
MIN_TIME=${MIN_TIME:-2}
LAYERS=${LAYERS:-1}
REAL=${REAL:-0}
REAL_DIR=${REAL_DIR:-$BUILD_DIR/real}
REAL_BATCHES=${REAL_BATCHES:-1 32}
TRAIN_BATCH=${TRAIN_BATCH:-32}

if [[ "${1:-}" == --real ]]; then
  REAL=1
  shift
fi
if [[ "$REAL" == 1 ]] && (($# > 0)); then
  echo "bench.sh: --real takes no model files (they are REAL_DIR's)" >&2
  exit 2
fi

if (($# > 0)); then
  models=("$@")
else
  models=(tests/fixtures/mlp_fmnist.onnx tests/fixtures/resnet_fmnist_bn.onnx
          tests/fixtures/resnet_fmnist_folded.onnx tests/fixtures/mobilenet_v2_bn.onnx)
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMIXQ_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target mixq-bench -j"$THREADS"

export OMP_NUM_THREADS=$THREADS
results=$(mktemp)
run_output=$(mktemp)
trap 'rm -f "$results" "$run_output"' EXIT
layer_flag=()
if [[ "$LAYERS" != 1 ]]; then layer_flag=(--no-layers); fi

# Runs one engine's process on one model at batch $1 (the rest is the
# command), showing its report and appending its RESULT lines, prefixed with
# the batch, to $results. A failed run (e.g. out of memory) is reported and
# leaves its cells empty instead of ending the bench.
run_real() {
  local batch=$1 status=0
  shift
  "$@" | tee "$run_output" || status=$?
  if ((status != 0)); then echo "bench.sh: failed (exit $status): $*" >&2; fi
  awk -v batch="$batch" '$1 == "RESULT" { print batch, $0 }' "$run_output" >>"$results"
}

if [[ "$REAL" == 1 ]]; then
  mapfile -t models < <(/usr/bin/python3 bench/make_real_models.py "$REAL_DIR")
  for model in "${models[@]}"; do
    for batch in $REAL_BATCHES; do
      train_flag=()
      if [[ "$batch" != "$TRAIN_BATCH" ]]; then train_flag=(--no-train); fi
      common=(--batch "$batch" --threads "$THREADS" --min-time "$MIN_TIME")
      run_real "$batch" "$BUILD_DIR/bench/mixq-bench" "${common[@]}" \
        "${layer_flag[@]}" "${train_flag[@]}" "$model"
      run_real "$batch" /usr/bin/python3 bench/torch_bench.py "${common[@]}" \
        "${train_flag[@]}" "$model"
      run_real "$batch" node bench/ort_bench.js "${common[@]}" "$model"
    done
  done
  echo
  echo "mixq / PyTorch / ONNX Runtime, 3x224x224, $THREADS threads: ms per batch" \
       "(median), ratio = other's ms / mixq's (> 1: mixq faster); train step at" \
       "batch $TRAIN_BATCH; peak RSS per process in MiB"
  awk '
    function ms(engine, key, kind,    v) {
      v = value[engine, key, kind]
      return v > 0 ? 1e3 * batch_of[key] / v : 0
    }
    function cell(x) { return x > 0 ? sprintf("%.1f", x) : "-" }
    function ratio(other, mixq) { return other > 0 && mixq > 0 ? sprintf("%.2f", other / mixq) : "-" }
    $2 == "RESULT" {
      key = $4 SUBSEP $1
      value[$3, key, $5] = $6
      if (!(key in batch_of)) { batch_of[key] = $1; name_of[key] = $4; order[n++] = key }
    }
    END {
      printf "%-20s %5s | %9s %9s %9s %8s %8s | %10s %11s %7s | %8s %9s %8s\n", "model", "batch",
             "mixq ms", "torch ms", "ort ms", "vs torch", "vs ort", "mixq train", "torch train",
             "ratio", "mixq MiB", "torch MiB", "ort MiB"
      for (i = 0; i < n; ++i) {
        k = order[i]
        mi = ms("mixq", k, "inference"); ti = ms("torch", k, "inference"); oi = ms("ort", k, "inference")
        mt = ms("mixq", k, "train"); tt = ms("torch", k, "train")
        printf "%-20s %5d | %9s %9s %9s %8s %8s | %10s %11s %7s | %8s %9s %8s\n", name_of[k],
               batch_of[k], cell(mi), cell(ti), cell(oi), ratio(ti, mi), ratio(oi, mi),
               cell(mt), cell(tt), ratio(tt, mt), cell(value["mixq", k, "peak_rss_mib"]),
               cell(value["torch", k, "peak_rss_mib"]), cell(value["ort", k, "peak_rss_mib"])
      }
    }' "$results"
  exit 0
fi
# One process per model and engine, so peak RSS is per model.
for model in "${models[@]}"; do
  "$BUILD_DIR/bench/mixq-bench" --batch "$BATCH" --threads "$THREADS" \
    --min-time "$MIN_TIME" "${layer_flag[@]}" "$model" | tee -a "$results"
  /usr/bin/python3 bench/torch_bench.py --batch "$BATCH" --threads "$THREADS" \
    --min-time "$MIN_TIME" "$model" | tee -a "$results"
done

echo
echo "mixq / PyTorch, batch $BATCH, $THREADS threads (samples/s; ratio > 1: mixq faster)"
awk '
  $1 == "RESULT" { value[$2, $3, $4] = $5; if (!($3 in seen)) { seen[$3] = 1; order[n++] = $3 } }
  END {
    printf "%-26s %12s %12s %7s   %12s %12s %7s   %9s %9s\n", "model", "mixq infer", "torch infer",
           "ratio", "mixq train", "torch train", "ratio", "mixq MiB", "torch MiB"
    for (i = 0; i < n; ++i) {
      m = order[i]
      mi = value["mixq", m, "inference"]; ti = value["torch", m, "inference"]
      mt = value["mixq", m, "train"]; tt = value["torch", m, "train"]
      printf "%-26s %12.1f %12.1f %7.2f   %12.1f %12.1f %7.2f   %9.1f %9.1f\n", m, mi, ti,
             (ti > 0 ? mi / ti : 0), mt, tt, (tt > 0 ? mt / tt : 0),
             value["mixq", m, "peak_rss_mib"], value["torch", m, "peak_rss_mib"]
    }
  }' "$results"
