#!/usr/bin/python3
"""Makes the tied-weights model and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, onnx 1.12, numpy):

    /usr/bin/python3 scripts/make_tied_models.py     # a few seconds

Writes tied_opset13.onnx (input `input` [B, 5, 16], output `logits` [B, 4],
dynamic batch), tied_inputs.npy (seeded Gaussian, batch 8) and
tied_logits_b1/_b3/_b8.npy (PyTorch's outputs), like
make_transformer_models.py. The model (random weights, eval mode):

  an nn.TransformerEncoder of 2 layers (d_model 16, 2 heads, feed-forward 32,
  ReLU) deep-copied from one perturbed layer, so both layers hold equal
  weights and torch.onnx.export writes each weight once, the second layer
  reading it through Identity nodes; then one nn.Linear(16, 16) applied twice
  (x -> relu(shared(x)) -> shared), the mean token and a Linear(16, 4) head.

Deterministic: torch.manual_seed(0), one thread.
"""

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import save_npy  # noqa: E402
from make_transformer_models import (BATCHES, REPO, WEIGHT_PERTURBATION,  # noqa: E402
                                     export)

D_MODEL = 16
HEADS = 2
FEED_FORWARD = 32
LAYERS = 2
TOKENS = 5
CLASSES = 4
OPSET = 13


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEED_FORWARD,
                                           dropout=0.0, batch_first=True)
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter.add_(torch.randn_like(parameter) * WEIGHT_PERTURBATION)
        self.encoder = nn.TransformerEncoder(layer, LAYERS,
                                             enable_nested_tensor=False)
        self.shared = nn.Linear(D_MODEL, D_MODEL)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, x):
        x = self.encoder(x)
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(x.mean(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Tied().eval()
    inputs = torch.randn(max(BATCHES), TOKENS, D_MODEL)
    save_npy(os.path.join(args.out, "tied_inputs.npy"), inputs.numpy())
    # Outside torch.no_grad(), as make_transformer_models.py: the encoder's
    # fused fast path has no ONNX export.
    for batch in BATCHES:
        logits = model(inputs[:batch]).detach()
        save_npy(os.path.join(args.out, f"tied_logits_b{batch}.npy"),
                 logits.numpy())
    export(model, inputs[:2], os.path.join(args.out, f"tied_opset{OPSET}.onnx"),
           OPSET)


if __name__ == "__main__":
    main()
