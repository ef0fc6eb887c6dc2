#!/usr/bin/python3
"""Makes the text models (integer token ids) and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, onnx 1.12, numpy):

    /usr/bin/python3 scripts/make_text_models.py     # a few seconds

Writes, for each architecture ARCH in (embed_bag, text_bert, text_gru,
text_padmask):

  ARCH_opset13.onnx, ARCH_opset17.onnx   the same random-weight model exported
                                         at two opsets, a dynamic batch axis
  ARCH_inputs.npz                        seeded inputs, batch 8, one int64
                                         array per graph input, keyed by name
  ARCH_logits_b1.npy, _b3, _b8           PyTorch's outputs for the first 1, 3
                                         and 8 samples, each run at that batch

Architectures (random weights, eval mode), ids int64 [B, 12] from a vocabulary
of VOCAB (text_bert: also attention_mask int64 [B, 12], trailing zeros):

  embed_bag  nn.Embedding(1000, 32), mean over tokens, Linear(32, 4)
  text_bert  token + position embeddings, LayerNorm, 2 BERT-style post-norm
             blocks written out (q/k/v Linear, heads by view/transpose,
             HuggingFace's extended mask (1 - mask[:, None, None, :]) *
             -10000 added to the scores, exact GELU), [CLS] pooling, Linear(32, 3)
  text_gru   nn.Embedding(300, 16), nn.GRU(16, 24, batch_first), Linear(24, 4)
             on the last hidden state
  text_padmask  nn.Embedding(100, 16), one nn.TransformerEncoderLayer (2
             heads) told the padding by src_key_padding_mask = ids == 0,
             Linear(16, 3) on token 0

Deterministic: torch.manual_seed(0), one thread.
"""

import argparse
import os
import sys

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import save_npy  # noqa: E402  (the shared .npy writer)

OPSETS = (13, 17)
BATCHES = (1, 3, 8)
TOKENS = 12
BAG_VOCAB = 1000
BAG_WIDTH = 32
BAG_CLASSES = 4
BERT_VOCAB = 200
BERT_WIDTH = 32
BERT_HEADS = 4
BERT_FEED_FORWARD = 64
BERT_LAYERS = 2
BERT_CLASSES = 3
# HuggingFace's additive mask value for padded keys.
MASK_VALUE = -10000.0
GRU_VOCAB = 300
GRU_WIDTH = 16
GRU_HIDDEN = 24
GRU_CLASSES = 4
PADMASK_VOCAB = 100
PADMASK_WIDTH = 16
PADMASK_HEADS = 2
PADMASK_CLASSES = 3
# Fixtures stay small: each file under this many bytes.
MAX_FIXTURE_BYTES = 300_000

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EmbedBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(BAG_VOCAB, BAG_WIDTH)
        self.head = nn.Linear(BAG_WIDTH, BAG_CLASSES)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids).mean(1))


class BertLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(BERT_WIDTH, BERT_WIDTH)
        self.key = nn.Linear(BERT_WIDTH, BERT_WIDTH)
        self.value = nn.Linear(BERT_WIDTH, BERT_WIDTH)
        self.out = nn.Linear(BERT_WIDTH, BERT_WIDTH)
        self.norm1 = nn.LayerNorm(BERT_WIDTH)
        self.ff = nn.Sequential(nn.Linear(BERT_WIDTH, BERT_FEED_FORWARD), nn.GELU(),
                                nn.Linear(BERT_FEED_FORWARD, BERT_WIDTH))
        self.norm2 = nn.LayerNorm(BERT_WIDTH)

    def heads(self, t):
        batch, tokens, width = t.shape
        return t.view(batch, tokens, BERT_HEADS, width // BERT_HEADS).transpose(1, 2)

    def forward(self, x, extended_mask):
        batch, tokens, width = x.shape
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        scores = (q @ k.transpose(-2, -1)) / (width // BERT_HEADS) ** 0.5
        scores = scores + extended_mask
        y = (scores.softmax(-1) @ v).transpose(1, 2).contiguous().view(batch, tokens, width)
        x = self.norm1(x + self.out(y))
        return self.norm2(x + self.ff(x))


class TextBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(BERT_VOCAB, BERT_WIDTH)
        self.positions = nn.Embedding(TOKENS, BERT_WIDTH)
        self.norm = nn.LayerNorm(BERT_WIDTH)
        self.layers = nn.ModuleList([BertLayer() for _ in range(BERT_LAYERS)])
        self.head = nn.Linear(BERT_WIDTH, BERT_CLASSES)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.norm(self.tokens(input_ids) + self.positions(positions)[None])
        extended = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_VALUE
        for layer in self.layers:
            x = layer(x, extended)
        return self.head(x[:, 0])


class TextGru(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(GRU_VOCAB, GRU_WIDTH)
        self.gru = nn.GRU(GRU_WIDTH, GRU_HIDDEN, batch_first=True)
        self.head = nn.Linear(GRU_HIDDEN, GRU_CLASSES)

    def forward(self, input_ids):
        _, hidden = self.gru(self.embed(input_ids))
        return self.head(hidden[-1])


class TextPadMask(nn.Module):
    """nn.TransformerEncoder told which tokens are padding (id 0) through
    src_key_padding_mask: its export builds the float mask at run time
    (Shape of a [batch x heads, 1, T] tensor -> ConstantOfShape -> Where)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(PADMASK_VOCAB, PADMASK_WIDTH)
        layer = nn.TransformerEncoderLayer(PADMASK_WIDTH, PADMASK_HEADS,
                                           2 * PADMASK_WIDTH, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1,
                                             enable_nested_tensor=False)
        self.head = nn.Linear(PADMASK_WIDTH, PADMASK_CLASSES)

    def forward(self, input_ids):
        padding = input_ids == 0
        x = self.encoder(self.embed(input_ids), src_key_padding_mask=padding)
        return self.head(x[:, 0])


def check_size(path):
    size = os.path.getsize(path)
    if size > MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, more than {MAX_FIXTURE_BYTES}")
    return size


def export(model, example, names, path, opset):
    dynamic = {name: {0: "batch"} for name in names + ["logits"]}
    torch.onnx.export(model, example, path, opset_version=opset,
                      do_constant_folding=True, input_names=names,
                      output_names=["logits"], dynamic_axes=dynamic)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    size = check_size(path)
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"wrote {path} ({size} bytes): opset {opset}, "
          f"{len(proto.graph.node)} nodes, ops {ops}")


def make(name, model, inputs, out_dir):
    """`inputs`: graph input name -> int64 tensor [max(BATCHES), TOKENS]."""
    model.eval()
    path = os.path.join(out_dir, f"{name}_inputs.npz")
    np.savez(path, **{key: value.numpy() for key, value in inputs.items()})
    print(f"wrote {path} ({check_size(path)} bytes): {list(inputs)}")
    names = list(inputs)
    with torch.no_grad():
        for batch in BATCHES:
            logits = model(*[inputs[key][:batch] for key in names])
            save_npy(os.path.join(out_dir, f"{name}_logits_b{batch}.npy"), logits.numpy())
    example = tuple(inputs[key][:2] for key in names)
    for opset in OPSETS:
        export(model, example, names, os.path.join(out_dir, f"{name}_opset{opset}.onnx"),
               opset)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch = max(BATCHES)
    make("embed_bag", EmbedBag(),
         {"input_ids": torch.randint(0, BAG_VOCAB, (batch, TOKENS))}, args.out)
    # Sample i keeps its first TOKENS - i tokens; the rest are padding.
    lengths = torch.tensor([TOKENS - i for i in range(batch)])
    mask = (torch.arange(TOKENS)[None, :] < lengths[:, None]).long()
    make("text_bert", TextBert(),
         {"input_ids": torch.randint(0, BERT_VOCAB, (batch, TOKENS)) * mask,
          "attention_mask": mask}, args.out)
    make("text_gru", TextGru(),
         {"input_ids": torch.randint(0, GRU_VOCAB, (batch, TOKENS))}, args.out)
    # Ids from 1; sample i's last i tokens are padding (0).
    make("text_padmask", TextPadMask(),
         {"input_ids": torch.randint(1, PADMASK_VOCAB, (batch, TOKENS)) * mask},
         args.out)


if __name__ == "__main__":
    main()
