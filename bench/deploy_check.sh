#!/usr/bin/env bash
# What a user deploys, end to end: starts a mixq-server on a temporary store,
# submits the same search with the default strategy and with uniform,
# knapsack and progressive (Fashion-MNIST training images; the default
# validation hold-out), exports each job's best policy by validation accuracy
# (mixq best → mixq export --policy-id), and measures every export on the
# 10 000 Fashion-MNIST test images, which no job saw, twice: with mixq-run and
# with ONNX Runtime (tools/ort). Prints one row per strategy.
#
#   bench/deploy_check.sh MODEL.onnx [AVG_BITS] [SEED]
#   STRATEGIES="default uniform" bench/deploy_check.sh …   # a subset
#
# Needs a Release build (BUILD_DIR, default build: mixq-server, mixq,
# mixq-run), tools/ort installed (scripts/install-deps.sh) and
# /usr/bin/python3 with NumPy (scripts/install-deps.sh --python). Never run by
# ctest: a few minutes per strategy on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "$1")
BITS=${2:-3}
SEED=${3:-0}
BUILD_DIR=${BUILD_DIR:-build}
FASHION=/usr/share/datasets/fashion-mnist
WORK=$(mktemp -d -t mixq-deploy.XXXXXX)
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT

"$BUILD_DIR/server/mixq-server" --listen 127.0.0.1:0 --data-dir "$WORK/data" \
  --port-file "$WORK/port" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/port" ]] && break; sleep 0.1; done
MIXQ=("$BUILD_DIR/client/mixq" --server "127.0.0.1:$(cat "$WORK/port")")

# The test images as the jobs normalise them, and their labels, for ORT.
/usr/bin/python3 - "$FASHION" "$WORK" <<'PY'
import gzip, sys, numpy as np
src, out = sys.argv[1], sys.argv[2]
with gzip.open(f"{src}/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
x = (x.astype(np.float32) / np.float32(255) - np.float32(0.2860)) / np.float32(0.3530)
np.save(f"{out}/test_x.npy", x.astype(np.float32))
with gzip.open(f"{src}/t10k-labels-idx1-ubyte.gz") as f:
    np.save(f"{out}/test_y.npy", np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
PY

echo "model $MODEL ($(stat -c %s "$MODEL") bytes), $BITS average bits, seed $SEED"
"$BUILD_DIR/engine/mixq-run" --model "$MODEL" --inputs "$WORK/test_x.npy" \
  --labels "$WORK/test_y.npy" | sed -n 's/^accuracy \([^ ]*\).*/FP32 test accuracy (mixq-run): \1/p'
printf '%-12s %-22s %9s %12s %9s %9s %9s %9s %6s\n' strategy policy "avg bits" "export B" \
  "val acc" "test acc" "ORT acc" agree "s"
for strategy in ${STRATEGIES:-default uniform knapsack progressive}; do
  start=$(date +%s)
  flags=()
  [[ $strategy != default ]] && flags=(--strategy "$strategy")
  job=$("${MIXQ[@]}" submit --model "$MODEL" \
    --inputs "$FASHION/train-images-idx3-ubyte.gz" --labels "$FASHION/train-labels-idx1-ubyte.gz" \
    --normalize 0.2860,0.3530 --max-samples 12000 --calib-size 512 \
    --bits 8,6,5,4,3,2 --target-avg-bits "$BITS" --candidates 8 --max-layers 2 \
    --finetune-steps 100 --seed "$SEED" "${flags[@]}")
  "${MIXQ[@]}" watch "$job" >/dev/null
  best=$("${MIXQ[@]}" --json best "$job" --top-k 1)
  read -r policy avg val < <(/usr/bin/python3 -c '
import json, sys
p = json.loads(sys.argv[1])["policies"][0]
print(p["policy_id"], p["avg_bits"], p.get("val_accuracy"))' "$best")
  "${MIXQ[@]}" export "$job" --policy-id "$policy" -o "$WORK/$strategy.onnx" >/dev/null
  test_acc=$("$BUILD_DIR/engine/mixq-run" --model "$WORK/$strategy.onnx" \
    --inputs "$WORK/test_x.npy" --labels "$WORK/test_y.npy" --output "$WORK/$strategy.mixq.npy" |
    sed -n 's/^accuracy \([^ ]*\).*/\1/p')
  node tools/ort/run_model.js "$WORK/$strategy.onnx" "$WORK/test_x.npy" "$WORK/$strategy.ort.npy"
  read -r ort agree < <(/usr/bin/python3 -c '
import sys, numpy as np
w = sys.argv[1]
y = np.load(f"{w}/test_y.npy"); o = np.load(f"{w}/{sys.argv[2]}.ort.npy").argmax(1)
m = np.load(f"{w}/{sys.argv[2]}.mixq.npy").argmax(1)
print((o == y).mean(), (o == m).mean())' "$WORK" "$strategy")
  bits=$("${MIXQ[@]}" export "$job" --policy-id "$policy" --format policy-json -o - |
    /usr/bin/python3 -c 'import json,sys; print("/".join(str(l["bits"]) for l in json.load(sys.stdin)["layers"]))')
  printf '%-12s %-22s %9.3f %12s %9.4f %9.4f %9.4f %9.4f %6d\n' "$strategy" "$policy $bits" "$avg" \
    "$(stat -c %s "$WORK/$strategy.onnx")" "$val" "$test_acc" "$ort" "$agree" \
    "$(($(date +%s) - start))"
done
rm -rf "$WORK"
