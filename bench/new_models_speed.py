#!/usr/bin/python3
"""Inference speed of the engine against PyTorch 1.13 on the non-CNN fixtures.

The transformer and recurrent fixtures of tests/fixtures (scripts/make_transformer_models.py,
scripts/make_rnn_models.py) are rebuilt in PyTorch from the same classes (timing does not
depend on the weights), fed the same random inputs, and timed in the same run:

    /usr/bin/python3 bench/new_models_speed.py [--build build] [--samples 2048] [--batch 128]

mixq's time is mixq-run's wall time on all samples less its wall time on one batch (model
load, process start and input reading cancelled out); PyTorch's is eval mode under
torch.no_grad(). Both at --threads (default 2). Best of --repeats. Install
libopenblas0-pthread first (scripts/install-deps.sh --python does), or PyTorch runs on the
reference BLAS. Never run by ctest: timings need a quiet machine.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import make_rnn_models as rnn  # noqa: E402
import make_transformer_models as xf  # noqa: E402

# name: (fixture, PyTorch builder, per-sample input shape)
MODELS = {
    "encoder": ("encoder_opset17.onnx", xf.make_encoder, (xf.SEQUENCE, xf.D_MODEL)),
    "vit": ("vit_opset17.onnx", lambda: xf.TinyVit("none"), (1, xf.IMAGE_SIDE, xf.IMAGE_SIDE)),
    "bert": ("bert_opset17.onnx", xf.BertBlock, (xf.BERT_TOKENS, xf.D_MODEL)),
    "lstm": ("lstm_fmnist_opset17.onnx", lambda: rnn.RowClassifier(nn.LSTM, 1, False),
             (rnn.ROWS, rnn.COLUMNS)),
    "gru": ("gru_fmnist_opset17.onnx", lambda: rnn.RowClassifier(nn.GRU, 1, False),
            (rnn.ROWS, rnn.COLUMNS)),
    "lstm_bi2": ("lstm_bi2_fmnist_opset17.onnx", lambda: rnn.RowClassifier(nn.LSTM, 2, True),
                 (rnn.ROWS, rnn.COLUMNS)),
    "gru_bi2": ("gru_bi2_fmnist_opset17.onnx", lambda: rnn.RowClassifier(nn.GRU, 2, True),
                (rnn.ROWS, rnn.COLUMNS)),
}


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(REPO, "build"))
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run = os.path.join(args.build, "engine", "mixq-run")
    print(f"{args.samples} samples, batch {args.batch}, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"{'model':10} {'mixq s':>8} {'PyTorch s':>10} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.npy")
        for name, (fixture, build, shape) in MODELS.items():
            x = torch.randn(args.samples, *shape)
            full = os.path.join(tmp, f"{name}.npy")
            one = os.path.join(tmp, f"{name}_one.npy")
            np.save(full, x.numpy())
            np.save(one, x[:args.batch].numpy())
            model_path = os.path.join(REPO, "tests", "fixtures", fixture)

            def mixq(path):
                subprocess.run([run, "--model", model_path, "--inputs", path, "--output", out,
                                "--batch-size", str(args.batch),
                                "--threads", str(args.threads)],
                               check=True, stdout=subprocess.DEVNULL)

            fixed = best_of(args.repeats, lambda: mixq(one))
            total = best_of(args.repeats, lambda: mixq(full))
            # The fixed cost covers one batch of the work: scale the rest.
            per_batch = (total - fixed) / max(1, args.samples // args.batch - 1)
            mixq_seconds = per_batch * (args.samples // args.batch)

            model = build().eval()

            def torch_run():
                with torch.no_grad():
                    for i in range(0, args.samples, args.batch):
                        model(x[i:i + args.batch])

            torch_run()  # warm-up
            torch_seconds = best_of(args.repeats, torch_run)
            print(f"{name:10} {mixq_seconds:8.3f} {torch_seconds:10.3f} "
                  f"{torch_seconds / mixq_seconds:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
