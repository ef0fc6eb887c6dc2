#!/usr/bin/env python3
"""A release gate for a quantized model, for one CI/CD or Kubeflow/Airflow step.

Uploads the model and data to a mixq server, searches a mixed-precision
policy under a budget, takes the best kept policy within the budget (the
highest validation accuracy), and passes when its validation accuracy is
within --max-drop points of the FP32 model's and ONNX Runtime, run on the
exported QDQ model over the same validation data, measures what the job
reported (within --ort-tolerance points). Writes OUT/model.onnx (when the
accuracy passes) and OUT/metrics.json (always; `passed` and `reason` say
why).

Exit codes: 0 the gate passed; 1 it failed (metrics.json says why);
2 usage error, or the gate could not run (server unreachable, the job
failed, ONNX Runtime missing).

    python3 examples/pipeline/gate.py --server 127.0.0.1:50051 \\
        --model model.onnx --inputs x.npy --labels y.npy \\
        --val-inputs val_x.npy --val-labels val_y.npy \\
        --target-avg-bits 4 --max-drop 1.0 --out gate-out
"""

import argparse
import json
import math
import os
import subprocess
import sys
import traceback
from typing import Any, Dict, List, Sequence

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

try:
    from mixq_client import (SUCCEEDED, Client, Job, JobState, MixqError,
                             Policy, TlsConfig)
except ImportError as missing:
    # Not "the gate failed" (exit 1): it could not run.
    print(f"gate.py: {missing}: install the client first (pip install "
          "--no-build-isolation --no-index ./clients/python, in a venv; see "
          "clients/python/README.md)", file=sys.stderr)
    sys.exit(EXIT_ERROR)
DEFAULT_ORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "..", "..", "tools", "ort")


class GateError(Exception):
    """The gate could not run (exit 2)."""


def numbers(kind: type, count: int = 0) -> Any:
    """An argparse type: comma-separated numbers of `kind` (`count` of them
    if not 0)."""
    def parse(text: str) -> List[Any]:
        try:
            values = [kind(part) for part in text.split(",")]
        except ValueError:
            values = []
        if not values or (count and len(values) != count):
            raise argparse.ArgumentTypeError(
                f"expected {count or 'some'} comma-separated numbers, "
                f"got {text!r}")
        return values
    return parse


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quantize a model with mixq and gate on its accuracy.")
    parser.add_argument("--server",
                        default=os.environ.get("MIXQ_SERVER", "127.0.0.1:50051"))
    parser.add_argument("--token-file", help="bearer token (server "
                        "--auth-token-file); default $MIXQ_TOKEN")
    parser.add_argument("--tls-ca", help="TLS, trusting this CA (PEM)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS, trusting the system's roots")
    data = parser.add_argument_group("model and data (paths or sha256:HEX)")
    data.add_argument("--model", required=True)
    data.add_argument("--inputs", required=True)
    data.add_argument("--labels", required=True)
    data.add_argument("--val-inputs", help="validation inputs (with "
                      "--val-labels; default: the job's held-out samples)")
    data.add_argument("--val-labels")
    data.add_argument("--normalize", type=numbers(float, 2),
                      help="MEAN,STD as for `mixq submit`")
    data.add_argument("--max-samples", type=int)
    data.add_argument("--calib-size", type=int, default=512)
    search = parser.add_argument_group("search")
    search.add_argument("--bits", type=numbers(int), default=[8, 6, 4, 2])
    budget = search.add_mutually_exclusive_group(required=True)
    budget.add_argument("--target-avg-bits", type=float)
    budget.add_argument("--max-size-bytes", type=int)
    search.add_argument("--finetune-steps", type=int)
    search.add_argument("--strategy")
    search.add_argument("--seed", type=int, default=0)
    gate = parser.add_argument_group("gate")
    gate.add_argument("--max-drop", type=float, required=True,
                      help="the most validation accuracy, in points, the "
                      "quantized model may lose against FP32")
    gate.add_argument("--ort-tolerance", type=float, default=1.0,
                      help="the most ONNX Runtime's accuracy on the export "
                      "may differ from the job's, in points (default 1)")
    gate.add_argument("--ort-dir", default=DEFAULT_ORT_DIR,
                      help="onnxruntime-node and accuracy.js (tools/ort)")
    gate.add_argument("--node", default="node")
    gate.add_argument("--out", required=True, help="directory for "
                      "model.onnx and metrics.json")
    args = parser.parse_args(argv)
    if (args.val_inputs is None) != (args.val_labels is None):
        parser.error("give both --val-inputs and --val-labels, or neither")
    if any(path.lower().startswith("sha256:") for path in validation_files(args)):
        parser.error("ONNX Runtime reads the validation data (--val-inputs and "
                     "--val-labels, else --inputs and --labels): give files, "
                     "not sha256: references")
    return args


def validation_files(args: argparse.Namespace) -> List[str]:
    """The files holding the job's validation set: the validation files, or
    the training files whose last samples the job holds out."""
    if args.val_inputs:
        return [args.val_inputs, args.val_labels]
    return [args.inputs, args.labels]


def make_client(args: argparse.Namespace) -> Client:
    token = os.environ.get("MIXQ_TOKEN")
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read()
    tls = TlsConfig(ca=args.tls_ca) if args.tls_ca else args.tls
    return Client(args.server, token=token, tls=tls)


def run_search(client: Client, args: argparse.Namespace) -> Job:
    """Submits the job, follows it to its end, returns it (Job)."""
    spec: Dict[str, Any] = dict(
        model=args.model, inputs=args.inputs, labels=args.labels,
        val_inputs=args.val_inputs, val_labels=args.val_labels,
        max_samples=args.max_samples, calib_size=args.calib_size,
        bits=args.bits, normalize=args.normalize,
        target_avg_bits=args.target_avg_bits,
        target_size_bytes=args.max_size_bytes,
        finetune_steps=args.finetune_steps, strategy=args.strategy,
        seed=args.seed, name="pipeline-gate")
    job = client.submit(**spec)
    print(f"gate: job {job.id} submitted", file=sys.stderr)
    for event in client.watch(job.id):
        print(f"gate: {event.phase} step {event.step} "
              f"({event.progress:.0%})", file=sys.stderr)
    job = client.job(job.id)
    if job.state != SUCCEEDED:
        raise GateError(
            f"job {job.id} ended {JobState.Name(job.state)}: {job.error}")
    return job


def ort_accuracy(args: argparse.Namespace, model: str,
                 val_samples: int) -> Dict[str, Any]:
    """ONNX Runtime's accuracy on the job's validation set: the validation
    files, or the last val_samples of the samples the job used."""
    data = validation_files(args)
    if not args.val_inputs:
        data += ["--last", str(val_samples)]
        if args.max_samples:
            data += ["--max-samples", str(args.max_samples)]
    command = [args.node, os.path.join(args.ort_dir, "accuracy.js"), model,
               *data]
    if args.normalize:
        command += ["--normalize", ",".join(map(str, args.normalize))]
    env = dict(os.environ,
               NODE_PATH=os.path.join(args.ort_dir, "node_modules"))
    try:
        run = subprocess.run(command, capture_output=True, text=True, env=env)
    except OSError as error:
        raise GateError(f"cannot run {args.node}: {error}") from None
    if run.returncode != 0:
        raise GateError(f"ONNX Runtime check failed: {run.stderr.strip()}")
    return json.loads(run.stdout)


def points(fraction: float) -> float:
    return round(100 * fraction, 4)


def versus_fp32(drop: float) -> str:
    return (f"{drop} points below FP32" if drop >= 0 else
            f"{-drop} points above FP32")


def gate(client: Client, args: argparse.Namespace,
         metrics: Dict[str, Any]) -> bool:
    """Runs the gate, filling `metrics`; True when it passes."""
    job = run_search(client, args)
    metrics.update(job_id=job.id, fp32_val_accuracy=job.fp32_val_accuracy,
                   val_samples=job.val_samples,
                   fp32_size_bytes=job.fp32_size_bytes)
    policies: List[Policy] = client.best(
        job.id, top_k=1, max_avg_bits=args.target_avg_bits or 0,
        max_size_bytes=args.max_size_bytes or 0)
    if not policies:
        metrics["reason"] = "no kept policy is within the budget"
        return False
    best = policies[0]
    drop = points(job.fp32_val_accuracy - best.val_accuracy)
    metrics.update(policy_id=best.policy_id, avg_bits=best.avg_bits,
                   size_bytes=best.size_bytes, val_accuracy=best.val_accuracy,
                   drop_points=drop)
    if math.isnan(drop) or drop > args.max_drop:
        metrics["reason"] = (
            f"policy {best.policy_id} loses {drop} points of validation "
            f"accuracy against FP32 ({points(best.val_accuracy)} % vs "
            f"{points(job.fp32_val_accuracy)} %), more than --max-drop "
            f"{args.max_drop}")
        return False
    model = os.path.join(args.out, "model.onnx")
    exported = client.export(job.id, model, policy_id=best.policy_id)
    metrics.update(model=model, model_sha256=exported.sha256)
    ort = ort_accuracy(args, model, job.val_samples)
    ort_gap = points(abs(ort["accuracy"] - best.val_accuracy))
    metrics.update(ort_accuracy=ort["accuracy"], ort_samples=ort["samples"],
                   ort_gap_points=ort_gap)
    if ort_gap > args.ort_tolerance:
        metrics["reason"] = (
            f"ONNX Runtime measures {points(ort['accuracy'])} % on the "
            f"export, the job {points(best.val_accuracy)} %: more than "
            f"--ort-tolerance {args.ort_tolerance} points apart")
        return False
    metrics["reason"] = (
        f"policy {best.policy_id}: {best.avg_bits:.2f} avg bits, "
        f"{int(best.size_bytes)} bytes, validation accuracy "
        f"{points(best.val_accuracy)} % ({versus_fp32(drop)}; ONNX Runtime "
        f"{points(ort['accuracy'])} %)")
    return True


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    metrics: Dict[str, Any] = {
        "max_drop_points": args.max_drop,
        "budget": ({"avg_bits": args.target_avg_bits}
                   if args.target_avg_bits else
                   {"size_bytes": args.max_size_bytes})}
    try:
        with make_client(args) as client:
            passed = gate(client, args, metrics)
        code = EXIT_PASSED if passed else EXIT_FAILED
    except (MixqError, GateError, OSError) as error:
        passed, code = False, EXIT_ERROR
        metrics["reason"] = f"the gate could not run: {error}"
    except Exception as error:  # noqa: BLE001 (a bug must not read as "failed")
        traceback.print_exc()
        passed, code = False, EXIT_ERROR
        metrics["reason"] = f"the gate could not run: internal error: {error!r}"
    metrics["passed"] = passed
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"gate: {'PASSED' if passed else 'FAILED'}: {metrics['reason']}",
          file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
