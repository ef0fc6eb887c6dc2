#!/usr/bin/python3
"""Makes the Swin and ConvNeXt models and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, torchvision 0.14, onnx 1.12):

    /usr/bin/python3 scripts/make_swin_models.py     # a few seconds

Writes, for each architecture ARCH in (swin, convnext), the files
make_transformer_models.py writes (ARCH_opset13.onnx, ARCH_opset17.onnx with
a dynamic batch, ARCH_inputs.npy, ARCH_logits_b1/_b3/_b8.npy), from
torchvision's own classes with random, perturbed weights, in eval mode:

  swin      torchvision.models.swin_transformer.SwinTransformer: patches of
            4x4, embed_dim 8, one stage of 2 blocks with 2 heads and 4x4
            windows, on 3x28x28 (7x7 patches, padded to 8x8). The second block
            shifts its windows: its attention mask is a slice-assigned
            constant (ScatterND, Equal, Where), its shapes use Mod. One stage
            keeps the file under 300 KB (the export writes ~1 200 nodes per
            stage); torchvision's swin_t adds patch merging, which is plain
            Slice/Concat/LayerNorm/MatMul.
  convnext  torchvision.models.convnext.ConvNeXt with two stages of one block
            (16 and 32 channels): a 4x4 patchify stem, LayerNorm2d, blocks of
            a depthwise 7x7 Conv, LayerNorm over channels through permutes,
            a Linear pair with exact GELU and a layer scale, a downsampling
            LayerNorm2d + 2x2 Conv, and the LayerNorm2d/Flatten/Linear head;
            on 3x32x32
"""

import argparse
import os
import sys

import torch
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_transformer_models import REPO, make  # noqa: E402

NUM_CLASSES = 10
SWIN_SIDE = 28
CONVNEXT_SIDE = 32
CHANNELS = 3  # torchvision's patch embeddings take RGB


def make_swin():
    return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2],
                           num_heads=[2], window_size=[4, 4],
                           num_classes=NUM_CLASSES)


def make_convnext():
    stages = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    return ConvNeXt(stages, num_classes=NUM_CLASSES)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    make("swin", make_swin(), (CHANNELS, SWIN_SIDE, SWIN_SIDE), args.out)
    make("convnext", make_convnext(), (CHANNELS, CONVNEXT_SIDE, CONVNEXT_SIDE),
         args.out)


if __name__ == "__main__":
    main()
