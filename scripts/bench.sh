#!/usr/bin/env bash
# Builds mixq-bench (Release), times mixq and PyTorch on the same models at the
# same batch and thread count, and prints mixq/PyTorch throughput ratios
# (inference and train step, per model; > 1 means mixq is faster).
#
#   scripts/bench.sh [MODEL.onnx...]     default: the MLP and CNN fixtures
#
# Environment: BUILD_DIR (default build-bench), BATCH (128), THREADS (2),
# MIN_TIME (seconds per measurement, 2), LAYERS (1: per-Conv-layer table).
# Needs `scripts/install-deps.sh --python` for PyTorch (+ OpenBLAS).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}
BATCH=${BATCH:-128}
THREADS=${THREADS:-2}
MIN_TIME=${MIN_TIME:-2}
LAYERS=${LAYERS:-1}

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
trap 'rm -f "$results"' EXIT
layer_flag=()
if [[ "$LAYERS" != 1 ]]; then layer_flag=(--no-layers); fi
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
