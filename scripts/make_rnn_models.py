#!/usr/bin/python3
"""Makes the recurrent (LSTM, GRU) models and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, onnx 1.12, numpy):

    /usr/bin/python3 scripts/make_rnn_models.py      # a few seconds

Row-sequence classifiers of Fashion-MNIST-shaped input [batch, 28, 28] (each
image row is a time step): an nn.LSTM or nn.GRU with batch_first=True, its
last time step, then Linear(·, 10). Random (seeded default) weights. Writes

  rnn_fmnist_inputs.npy              first 8 t10k images, normalised, float32 [8,28,28]
  lstm_fmnist_opset{13,17}.onnx      LSTM(28, 32) → y[:, -1] → Linear(32, 10)
  gru_fmnist_opset{13,17}.onnx       GRU(28, 32) (torch exports linear_before_reset=1)
  lstm_bi2_fmnist_opset{13,17}.onnx  LSTM(28, 32, num_layers=2, bidirectional) → Linear(64, 10)
  gru_bi2_fmnist_opset{13,17}.onnx   GRU, the same shape
  <model>_fmnist_logits.npy          PyTorch's logits for the inputs, float32 [8,10]
                                     (one file per model; both opsets share it)

Every export has input `input` [batch, 28, 28] and output `logits` [batch, 10]
with a symbolic batch. The script checks each with onnx.checker, and that
PyTorch's logits at batches 1 and 3 equal the rows of the batch-8 logits
(to 1e-6), so the tests may compare any batch with them.
"""

import argparse
import os
import sys

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models  # noqa: E402  (IDX reader and normalisation, .npy writer)

OPSETS = (13, 17)
NUM_CLASSES = 10
HIDDEN = 32
ROWS = 28  # time steps
COLUMNS = 28  # features per step
REF_SAMPLES = 8
CHECK_BATCHES = (1, 3)
ROW_TOLERANCE = 1e-6
MAX_FIXTURE_BYTES = 300_000
EXPORT_BATCH = 2  # the example batch; the exported batch axis is symbolic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RowClassifier(nn.Module):
    """cell(28 → 32, batch_first) over the image rows → last step → fc."""

    def __init__(self, cell, num_layers, bidirectional):
        super().__init__()
        self.rnn = cell(COLUMNS, HIDDEN, num_layers=num_layers, batch_first=True,
                        bidirectional=bidirectional)
        self.fc = nn.Linear(HIDDEN * (2 if bidirectional else 1), NUM_CLASSES)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


MODELS = (
    ("lstm", nn.LSTM, 1, False),
    ("gru", nn.GRU, 1, False),
    ("lstm_bi2", nn.LSTM, 2, True),
    ("gru_bi2", nn.GRU, 2, True),
)


def export(model, path, opset):
    torch.onnx.export(model, torch.zeros(EXPORT_BATCH, ROWS, COLUMNS), path,
                      opset_version=opset, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    size = os.path.getsize(path)
    if size > MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, more than {MAX_FIXTURE_BYTES}")
    ops = [n.op_type for n in proto.graph.node if n.op_type != "Constant"]
    print(f"wrote {path} ({size} bytes): opset {opset}, ops {ops}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)

    images, _ = make_models.load_split(args.data_dir, "t10k")
    inputs = images[:REF_SAMPLES].reshape(REF_SAMPLES, ROWS, COLUMNS)
    make_models.save_npy(os.path.join(args.out_dir, "rnn_fmnist_inputs.npy"),
                         inputs.numpy())
    for name, cell, num_layers, bidirectional in MODELS:
        model = RowClassifier(cell, num_layers, bidirectional).eval()
        with torch.no_grad():
            logits = model(inputs)
            for batch in CHECK_BATCHES:
                part = model(inputs[:batch])
                if not torch.allclose(part, logits[:batch], rtol=0, atol=ROW_TOLERANCE):
                    raise RuntimeError(f"{name}: batch {batch} differs from batch "
                                       f"{REF_SAMPLES}")
        make_models.save_npy(os.path.join(args.out_dir, f"{name}_fmnist_logits.npy"),
                             logits.numpy())
        for opset in OPSETS:
            export(model, os.path.join(args.out_dir, f"{name}_fmnist_opset{opset}.onnx"),
                   opset)


if __name__ == "__main__":
    main()
