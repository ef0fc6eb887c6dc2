#!/usr/bin/env bash
# The mixq demo, on a fresh Debian bookworm machine:
#   installs the dependencies, builds mixq-server and mixq, starts a server on
#   an embedded SQLite store in a temporary data directory, submits a 4-bit
#   search of the demo MLP (tests/fixtures/mlp_fmnist.onnx) with Fashion-MNIST
#   calibration data and the Fashion-MNIST test images as its validation set,
#   watches it to the end, prints the ranked best policies and the Pareto
#   front, exports the result (QDQ ONNX and policy JSON), measures the export
#   with mixq-run on the validation set (the figures the job reported), writes
#   the job's HTML report (mixq report), and stops the server.
# Environment: BUILD_DIR (default build), DEMO_DATA_DIR (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
FASHION=/usr/share/datasets/fashion-mnist

bash scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j2 --target mixq-server mixq mixq-run

DATA_DIR=${DEMO_DATA_DIR:-$(mktemp -d -t mixq-demo.XXXXXX)}
mkdir -p "$DATA_DIR"
rm -f "$DATA_DIR/port"
"$BUILD_DIR/server/mixq-server" --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
  --port-file "$DATA_DIR/port" 2>"$DATA_DIR/server.log" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s "$DATA_DIR/port" ]] && break; sleep 0.1; done
[[ -s "$DATA_DIR/port" ]] || { echo "server did not start:"; cat "$DATA_DIR/server.log"; exit 1; }
SERVER=127.0.0.1:$(cat "$DATA_DIR/port")
MIXQ=("$BUILD_DIR/client/mixq" --server "$SERVER")
echo "mixq-server on $SERVER, data dir $DATA_DIR (log: $DATA_DIR/server.log)"

JOB=$("${MIXQ[@]}" submit --name demo-mlp \
  --model "$ROOT/tests/fixtures/mlp_fmnist.onnx" \
  --inputs "$FASHION/train-images-idx3-ubyte.gz" --labels "$FASHION/train-labels-idx1-ubyte.gz" \
  --val-inputs "$FASHION/t10k-images-idx3-ubyte.gz" --val-labels "$FASHION/t10k-labels-idx1-ubyte.gz" \
  --normalize 0.2860,0.3530 --max-samples 10000 --calib-size 512 \
  --bits 8,6,4,2 --target-avg-bits 4 --candidates 8 --max-layers 2 \
  --finetune-steps 50 --seed 0)
echo "submitted $JOB"
"${MIXQ[@]}" watch "$JOB"
echo
"${MIXQ[@]}" results "$JOB"
echo
echo "Best policies within the budget:"
"${MIXQ[@]}" best "$JOB"
echo
echo "Accuracy against cost (kept policies no other beats):"
"${MIXQ[@]}" pareto "$JOB"
echo
# The result as a deployable QDQ ONNX model and as a policy document.
"${MIXQ[@]}" export "$JOB" --format onnx -o "$DATA_DIR/demo.qdq.onnx"
"${MIXQ[@]}" export "$JOB" --format policy-json -o "$DATA_DIR/demo.policy.json"
echo "exported $DATA_DIR/demo.qdq.onnx ($(stat -c %s "$DATA_DIR/demo.qdq.onnx") bytes) and $DATA_DIR/demo.policy.json"
echo "The export on the validation set, run by mixq-run (the job's final val accuracy and loss):"
"$BUILD_DIR/engine/mixq-run" --model "$DATA_DIR/demo.qdq.onnx" \
  --inputs "$FASHION/t10k-images-idx3-ubyte.gz" --labels "$FASHION/t10k-labels-idx1-ubyte.gz" \
  --normalize 0.2860,0.3530
echo
echo "A 3-bit budget from the same warm-up (--from-job: same model and data, no warm-up rerun):"
JOB3=$("${MIXQ[@]}" submit --name demo-mlp-3bit --from-job "$JOB" \
  --bits 8,6,4,2 --target-avg-bits 3 --finetune-steps 50 --seed 0)
"${MIXQ[@]}" watch "$JOB3"
echo
# Everything about the first job as one self-contained HTML page.
"${MIXQ[@]}" report "$JOB" -o "$DATA_DIR/demo.report.html"
echo "open file://$DATA_DIR/demo.report.html in a browser to see the report"
