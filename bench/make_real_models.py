#!/usr/bin/python3
"""Exports the real-shape benchmark models (issue #17) to ONNX.

    /usr/bin/python3 bench/make_real_models.py [OUT_DIR]    default: build-bench/real

Five torchvision architectures at 3x224x224 (REAL_MODELS), each built with
random weights from a fixed seed (build_real; constant-initialized tensors such
as BatchNorm's made non-constant, see spread_constant_tensors), in eval mode,
exported at
opset 13 with a dynamic batch axis and BatchNormalization kept (not folded
into the convolutions: TrainingMode.PRESERVE, no constant folding), so the
initializers carry PyTorch's parameter names. Files already in OUT_DIR are
skipped. Prints each model's path on stdout (scripts/bench.sh reads the list
from it) and what it did on stderr. bench/torch_bench.py rebuilds the same networks with build_real;
scripts/bench.sh --real runs this first. The files (~250 MB) are not
committed.
"""

import argparse
import itertools
import os
import sys

import torch
import torchvision

# File stem -> torchvision builder. The one table for export and timing.
REAL_MODELS = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
    "densenet121": torchvision.models.densenet121,
}
REAL_INPUT = (3, 224, 224)
SEED = 0
OPSET = 13
# Half-width of the uniform noise spread_constant_tensors adds.
CONSTANT_SPREAD = 0.1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO, "build-bench", "real")


def spread_constant_tensors(model):
    """Adds uniform noise in +-CONSTANT_SPREAD to every floating parameter or
    buffer whose elements are all equal (torchvision's BatchNorm weight 1,
    bias 0, running mean 0 and variance 1; zero-initialized biases). The
    exporter merges equal initializers into one, read through Identity nodes,
    which would make every BatchNorm share one tied parameter in mixq; and a
    trained network never has them."""
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.is_floating_point() and bool((tensor == tensor.flatten()[0]).all()):
                tensor.add_(CONSTANT_SPREAD * (2 * torch.rand_like(tensor) - 1))


def build_real(name):
    """The torchvision model `name` with the seeded random weights, in eval
    mode: the same weights every call, so a rebuilt model equals its export."""
    torch.manual_seed(SEED)
    model = REAL_MODELS[name](weights=None)
    spread_constant_tensors(model)
    model.eval()
    return model


def export(name, path):
    model = build_real(name)
    x = torch.randn((1,) + REAL_INPUT)
    torch.onnx.export(
        model, x, path, opset_version=OPSET,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=DEFAULT_OUT_DIR)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name in REAL_MODELS:
        path = os.path.join(args.out_dir, name + ".onnx")
        if not os.path.exists(path):
            # Written under a temporary name so an interrupted export is not
            # mistaken for a finished one on the next run.
            partial = path + ".partial"
            export(name, partial)
            os.replace(partial, path)
            print(f"{path}: exported, {os.path.getsize(path) / 2**20:.1f} MiB", file=sys.stderr)
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
