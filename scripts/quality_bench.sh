#!/usr/bin/env bash
# The search-quality benchmark: trains the Fashion-MNIST ResNet if it is not
# there yet (PyTorch, scripts/make_quality_model.py), builds
# mixq-quality-bench (Release), runs every strategy at each budget with the
# same fine-tune steps, and plots test accuracy against size.
#
#   scripts/quality_bench.sh [extra mixq-quality-bench flags]
#   e.g. scripts/quality_bench.sh --budgets 3 --runs uniform,progressive
#
# Environment: BUILD_DIR (default build-bench), OUT (build-quality).
# Needs `scripts/install-deps.sh --python` and python3-matplotlib for the
# model and the plot; never run by ctest (about 30 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}
OUT=${OUT:-build-quality}
mkdir -p "$OUT"

if [[ ! -f "$OUT/quality_resnet.onnx" ]]; then
  /usr/bin/python3 scripts/make_quality_model.py --out "$OUT/quality_resnet.onnx"
fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMIXQ_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target mixq-quality-bench -j2
"$BUILD_DIR/bench/mixq-quality-bench" --model "$OUT/quality_resnet.onnx" \
  --csv "$OUT/quality.csv" "$@" | tee "$OUT/quality.txt"
/usr/bin/python3 bench/plot_quality.py "$OUT/quality.csv" "$OUT/quality.png" \
  --title "mixq strategies, Fashion-MNIST ResNet"
echo "wrote $OUT/quality.txt, $OUT/quality.csv, $OUT/quality.png"
