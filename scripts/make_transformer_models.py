#!/usr/bin/python3
"""Makes the transformer models and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, onnx 1.12, numpy):

    /usr/bin/python3 scripts/make_transformer_models.py     # a few seconds

Writes, for each architecture ARCH in (encoder, vit, vit_tanh, bert):

  ARCH_opset13.onnx, ARCH_opset17.onnx   the same random-weight model exported
                                         at two opsets, input `input` and output
                                         `logits` with a dynamic batch axis
  ARCH_inputs.npy                        seeded Gaussian inputs, batch 8
  ARCH_logits_b1.npy, _b3, _b8           PyTorch's outputs for the first 1, 3
                                         and 8 inputs, each run at that batch

Architectures (random weights, eval mode):

  encoder    nn.TransformerEncoder, batch_first, 2 layers, d_model 32, 4 heads,
             feed-forward 64, exact GELU (-> Erf); input [B, 6, 32]
  vit        a tiny ViT on 1x28x28: patches of 7 by a stride-7 Conv2d, a class
             token expanded to the batch, a position embedding, 2 pre-norm
             blocks (LayerNorm, nn.MultiheadAttention, MLP with exact GELU),
             LayerNorm and a Linear head on the class token; output [B, 10]
  vit_tanh   the same with nn.GELU(approximate='tanh')
  bert       a BERT-style post-norm block written out by hand: one Linear for
             q, k and v `split` (-> Split), heads by `view(B, T, H, D/H)`
             and `transpose`, `q @ k^T` on 4-D tensors, softmax, exact GELU
             feed-forward, a Linear head on the mean token; input [B, 7, 32],
             output [B, 5]

Deterministic: torch.manual_seed(0), one thread.
"""

import argparse
import os
import sys

import onnx
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import save_npy  # noqa: E402  (the shared .npy writer)

OPSETS = (13, 17)
BATCHES = (1, 3, 8)
D_MODEL = 32
HEADS = 4
FEED_FORWARD = 64
LAYERS = 2
SEQUENCE = 6
IMAGE_SIDE = 28
PATCH = 7
NUM_CLASSES = 10
BERT_TOKENS = 7
BERT_CLASSES = 5
# Spread of the random offsets added to LayerNorm and bias parameters, and to
# the other weights.
DEFAULT_PERTURBATION = 0.1
WEIGHT_PERTURBATION = 0.02
# Fixtures stay small: each file under this many bytes.
MAX_FIXTURE_BYTES = 300_000

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class VitBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, gelu):
        super().__init__()
        self.norm1 = nn.LayerNorm(D_MODEL)
        self.attn = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(D_MODEL)
        self.mlp = nn.Sequential(nn.Linear(D_MODEL, FEED_FORWARD), gelu,
                                 nn.Linear(FEED_FORWARD, D_MODEL))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyVit(nn.Module):
    def __init__(self, approximate):
        super().__init__()
        patches = (IMAGE_SIDE // PATCH) ** 2
        self.patch = nn.Conv2d(1, D_MODEL, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D_MODEL) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, D_MODEL) * 0.02)
        self.blocks = nn.Sequential(
            *[VitBlock(nn.GELU(approximate=approximate)) for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, NUM_CLASSES)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class BertBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.out = nn.Linear(D_MODEL, D_MODEL)
        self.norm1 = nn.LayerNorm(D_MODEL)
        self.ff = nn.Sequential(nn.Linear(D_MODEL, FEED_FORWARD), nn.GELU(),
                                nn.Linear(FEED_FORWARD, D_MODEL))
        self.norm2 = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, BERT_CLASSES)

    def forward(self, x):
        batch, tokens, width = x.shape
        heads = [t.view(batch, tokens, HEADS, width // HEADS).transpose(1, 2)
                 for t in self.qkv(x).split(width, dim=-1)]
        q, k, v = heads
        scores = (q @ k.transpose(-2, -1)) / (width // HEADS) ** 0.5
        y = (scores.softmax(-1) @ v).transpose(1, 2).contiguous().view(
            batch, tokens, width)
        x = self.norm1(x + self.out(y))
        x = self.norm2(x + self.ff(x))
        return self.head(x.mean(1))


def make_encoder():
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEED_FORWARD, dropout=0.0,
                                       activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)


def perturb_defaults(model):
    """LayerNorm weights (all 1), biases (all 0), attention's in-projection
    bias and the layers nn.TransformerEncoder deep-copies start equal, and
    torch.onnx.export would then write one initializer and Identity nodes for
    the others: random offsets keep every parameter its own initializer."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            default = "norm" in name or name.endswith("bias")
            spread = DEFAULT_PERTURBATION if default else WEIGHT_PERTURBATION
            parameter.add_(torch.randn_like(parameter) * spread)


def export(model, example, path, opset):
    torch.onnx.export(model, example, path, opset_version=opset,
                      do_constant_folding=True, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    size = os.path.getsize(path)
    if size > MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, more than {MAX_FIXTURE_BYTES}")
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"wrote {path} ({size} bytes): opset {opset}, "
          f"{len(proto.graph.node)} nodes, ops {ops}")


def make(name, model, input_shape, out_dir):
    perturb_defaults(model)
    model.eval()
    inputs = torch.randn(max(BATCHES), *input_shape)
    save_npy(os.path.join(out_dir, f"{name}_inputs.npy"), inputs.numpy())
    # Outside torch.no_grad(): there nn.TransformerEncoder takes its fused
    # fast path, which has no ONNX export; the references use the same path
    # as the export.
    for batch in BATCHES:
        logits = model(inputs[:batch]).detach()
        save_npy(os.path.join(out_dir, f"{name}_logits_b{batch}.npy"), logits.numpy())
    for opset in OPSETS:
        export(model, inputs[:2], os.path.join(out_dir, f"{name}_opset{opset}.onnx"),
               opset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    make("encoder", make_encoder(), (SEQUENCE, D_MODEL), args.out)
    make("vit", TinyVit("none"), (1, IMAGE_SIDE, IMAGE_SIDE), args.out)
    make("vit_tanh", TinyVit("tanh"), (1, IMAGE_SIDE, IMAGE_SIDE), args.out)
    make("bert", BertBlock(), (BERT_TOKENS, D_MODEL), args.out)


if __name__ == "__main__":
    main()
