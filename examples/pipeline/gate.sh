#!/usr/bin/env bash
# The release gate of gate.py with the `mixq` CLI and its --json output only
# (no Python client): submit, watch, best, export, ONNX Runtime, metrics.json.
# JSON is read with python3's standard library (jq is not among mixq's
# dependencies); ONNX Runtime runs as in gate.py (tools/ort/accuracy.js).
#
#   examples/pipeline/gate.sh --model M --inputs X --labels Y \
#       [--val-inputs VX --val-labels VY] [--normalize MEAN,STD] \
#       [--max-samples N] [--calib-size N] [--bits 8,6,4,2] \
#       (--target-avg-bits B | --max-size-bytes S) [--finetune-steps N] \
#       [--strategy S] [--seed N] --max-drop POINTS [--ort-tolerance POINTS] \
#       --out DIR
#
# Environment: MIXQ (the CLI, default `mixq`), MIXQ_ARGS (its global flags,
# e.g. "--tls-ca ca.pem"), MIXQ_SERVER and MIXQ_TOKEN (the CLI's own), ORT_DIR
# (default tools/ort), NODE (default node). The CLI's JSON
# answers are kept in DIR/cli/. Exit codes as gate.py: 0 passed, 1 failed
# (DIR/metrics.json says why), 2 usage error or the gate could not run.
set -euo pipefail

# Word-split on purpose: MIXQ_ARGS holds several flags.
# shellcheck disable=SC2206
mixq=("${MIXQ:-mixq}" ${MIXQ_ARGS:-})
NODE=${NODE:-node}
ORT_DIR=${ORT_DIR:-$(cd "$(dirname "$0")/../../tools/ort" && pwd)}
usage() { sed -n '7,11p' "$0" >&2; exit 2; }

data=() search=() ort_data=() normalize=() inputs="" labels="" val_inputs=""
avg_bits="" size_bytes="" max_drop="" ort_tolerance=1 out="" bits=8,6,4,2
calib_size=512
while (($#)); do
  (($# >= 2)) || usage
  case "$1" in
    --model) data+=("$1" "$2") ;;
    --inputs) inputs=$2; data+=("$1" "$2") ;;
    --labels) labels=$2; data+=("$1" "$2") ;;
    --val-inputs) val_inputs=$2; data+=("$1" "$2") ;;
    --val-labels) val_labels=$2; data+=("$1" "$2") ;;
    --normalize) normalize=("$1" "$2"); data+=("$1" "$2") ;;
    --max-samples) ort_data+=("$1" "$2"); data+=("$1" "$2") ;;
    --bits) bits=$2 ;;
    --calib-size) calib_size=$2 ;;
    --finetune-steps | --strategy | --seed) search+=("$1" "$2") ;;
    --target-avg-bits) avg_bits=$2 ;;
    --max-size-bytes) size_bytes=$2 ;;
    --max-drop) max_drop=$2 ;;
    --ort-tolerance) ort_tolerance=$2 ;;
    --out) out=$2 ;;
    *) echo "gate.sh: unknown flag $1" >&2; usage ;;
  esac
  shift 2
done
[[ -n "$out" && -n "$max_drop" && -n "$inputs" && -n "$labels" ]] || usage
if [[ -n "$avg_bits" ]]; then
  [[ -z "$size_bytes" ]] || usage
  budget=(--target-avg-bits "$avg_bits") limit=(--max-avg-bits "$avg_bits")
else
  [[ -n "$size_bytes" ]] || usage
  budget=(--target-size-bytes "$size_bytes") limit=(--max-size-bytes "$size_bytes")
fi
cli=$out/cli
mkdir -p "$cli"
rm -f "$cli"/*.json "$out/model.onnx"

# q FILE EXPR: EXPR in Python over `d`, FILE's parsed JSON (protobuf's JSON
# mapping writes NaN as "NaN": float() reads it).
q() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# calc EXPR: arithmetic and comparisons on the numbers gathered so far.
calc() { python3 -c "print($1)"; }

# finish CODE REASON: writes metrics.json (the keys of gate.py's) and exits.
finish() {
  python3 - "$cli" "$out/metrics.json" "$1" "$2" "$max_drop" \
    "${avg_bits:-}" "${size_bytes:-}" <<'PY'
import json, os, sys
cli, path, code, reason, max_drop, avg_bits, size_bytes = sys.argv[1:]
def load(name):
    file = os.path.join(cli, name)
    return json.load(open(file)) if os.path.exists(file) else None
metrics = {"passed": code == "0", "reason": reason,
           "max_drop_points": float(max_drop),
           "budget": {"avg_bits": float(avg_bits)} if avg_bits
                     else {"size_bytes": int(size_bytes)}}
job, best, export, ort = (load(f) for f in
                          ("job.json", "best.json", "export.json", "ort.json"))
if job:
    metrics.update(job_id=job["id"], val_samples=job["val_samples"],
                   fp32_val_accuracy=float(job["fp32_val_accuracy"]),
                   fp32_size_bytes=float(job["fp32_size_bytes"]))
if best and best["policies"]:
    policy = best["policies"][0]
    val = float(policy["val_accuracy"])
    metrics.update(policy_id=policy["policy_id"], avg_bits=policy["avg_bits"],
                   size_bytes=policy["size_bytes"], val_accuracy=val,
                   drop_points=round(100 * (metrics["fp32_val_accuracy"] - val), 4))
if export:
    metrics.update(model=export["output"], model_sha256=export["sha256"])
if ort:
    metrics.update(ort_accuracy=ort["accuracy"], ort_samples=ort["samples"],
                   ort_gap_points=round(100 * abs(ort["accuracy"] - metrics["val_accuracy"]), 4))
with open(path, "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
    f.write("\n")
PY
  echo "gate.sh: $( (($1 == 0)) && echo PASSED || echo FAILED): $2" >&2
  exit "$1"
}
# run NAME CMD...: CMD's stdout to cli/NAME.json; the gate could not run
# (exit 2) when it fails.
run() {
  local name=$1
  shift
  "$@" >"$cli/$name.json" 2>"$cli/$name.err" ||
    { cat "$cli/$name.err" >&2; rm -f "$cli/$name.json";
      finish 2 "the gate could not run: $name: $(head -n 1 "$cli/$name.err")"; }
}

run submit "${mixq[@]}" --json submit "${data[@]}" --bits "$bits" \
  --calib-size "$calib_size" "${search[@]}" "${budget[@]}" \
  --name pipeline-gate --upload
job=$(q "$cli/submit.json" 'd["job"]["id"]')
echo "gate.sh: job $job submitted" >&2
# JSON Lines, one event each; exit 1 when the job failed or was cancelled.
"${mixq[@]}" --json watch "$job" >"$cli/events.jsonl" ||
  { run job "${mixq[@]}" --json status "$job"
    finish 2 "the gate could not run: job $job ended $(q "$cli/job.json" 'd["state"]'): $(q "$cli/job.json" 'd["error"]')"; }
run job "${mixq[@]}" --json status "$job"
run best "${mixq[@]}" --json best "$job" --top-k 1 "${limit[@]}"
if [[ $(q "$cli/best.json" 'len(d["policies"])') == 0 ]]; then
  finish 1 "no kept policy is within the budget"
fi
policy=$(q "$cli/best.json" 'd["policies"][0]["policy_id"]')
val=$(q "$cli/best.json" 'float(d["policies"][0]["val_accuracy"])')
fp32=$(q "$cli/job.json" 'float(d["fp32_val_accuracy"])')
drop=$(calc "round(100 * ($fp32 - $val), 4)")
# A NaN drop (unmeasured) fails too: the comparison is False.
if [[ $(calc "$drop <= $max_drop") != True ]]; then
  finish 1 "policy $policy loses $drop points of validation accuracy against FP32 ($val vs $fp32), more than --max-drop $max_drop"
fi
run export "${mixq[@]}" --json export "$job" --policy-id "$policy" -o "$out/model.onnx"

# ONNX Runtime on the job's validation set: the files, or its held-out samples.
if [[ -n "$val_inputs" ]]; then
  ort_data=("$val_inputs" "$val_labels")
else
  ort_data=("$inputs" "$labels" --last "$(q "$cli/job.json" 'd["val_samples"]')" "${ort_data[@]}")
fi
NODE_PATH=$ORT_DIR/node_modules run ort "$NODE" "$ORT_DIR/accuracy.js" \
  "$out/model.onnx" "${ort_data[@]}" "${normalize[@]}"
ort=$(q "$cli/ort.json" 'd["accuracy"]')
gap=$(calc "round(100 * abs($ort - $val), 4)")
if [[ $(calc "$gap <= $ort_tolerance") != True ]]; then
  finish 1 "ONNX Runtime measures $ort on the export, the job $val: more than --ort-tolerance $ort_tolerance points apart"
fi
finish 0 "policy $policy: validation accuracy $val against FP32's $fp32 (drop $drop points; ONNX Runtime $ort)"
