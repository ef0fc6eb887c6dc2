#!/usr/bin/env bash
# The search-quality benchmark: trains the Fashion-MNIST model if it is not
# there yet (PyTorch, scripts/make_quality_model.py), builds
# mixq-quality-bench (Release), runs every strategy at each budget with the
# same fine-tune steps, and plots test accuracy against size.
#
#   scripts/quality_bench.sh [extra mixq-quality-bench flags]
#   e.g. scripts/quality_bench.sh --budgets 3 --runs uniform,progressive
#   ARCH=vit scripts/quality_bench.sh --budgets 4,3 --runs uniform,knapsack,auto
#
# Environment: ARCH (resnet, vgg, vit, gru or restore; default resnet: the
# model is $OUT/quality_$ARCH.onnx, trained with TRAIN_FLAGS if missing;
# restore is searched label-free and judged by PSNR, without a plot),
# BUILD_DIR (default build-bench), OUT (build-quality).
# Needs `scripts/install-deps.sh --python` and python3-matplotlib for the
# model and the plot; never run by ctest (about 30 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${ARCH:-resnet}
BUILD_DIR=${BUILD_DIR:-build-bench}
OUT=${OUT:-build-quality}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
MODEL="$OUT/quality_$ARCH.onnx"
mkdir -p "$OUT"

if [[ ! -f "$MODEL" ]]; then
  # shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
  /usr/bin/python3 scripts/make_quality_model.py --arch "$ARCH" --out "$MODEL" $TRAIN_FLAGS
fi
METRIC_FLAGS=()
if [[ "$ARCH" == restore ]]; then
  METRIC_FLAGS=(--objective distill --metric psnr)
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMIXQ_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target mixq-quality-bench -j2
"$BUILD_DIR/bench/mixq-quality-bench" --model "$MODEL" "${METRIC_FLAGS[@]}" \
  --csv "$OUT/quality_$ARCH.csv" "$@" | tee "$OUT/quality_$ARCH.txt"
if [[ "$ARCH" != restore ]]; then
  /usr/bin/python3 bench/plot_quality.py "$OUT/quality_$ARCH.csv" "$OUT/quality_$ARCH.png" \
    --title "mixq strategies, Fashion-MNIST $ARCH"
fi
echo "wrote $OUT/quality_$ARCH.{txt,csv}"
