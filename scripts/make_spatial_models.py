#!/usr/bin/python3
"""Makes the 1-D and dense-prediction models and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, onnx 1.12, numpy;
`scripts/install-deps.sh --python` installs them):

    /usr/bin/python3 scripts/make_spatial_models.py     # a few seconds

Untrained networks with seeded random weights, each exported at opsets 13 and
17 (`<name>_opset13.onnx`, `<name>_opset17.onnx`) with input `input` and
output `output` on a symbolic batch (`dim_param "batch"`), plus
`<name>_outputs.npy` (PyTorch's float32 outputs; both opsets share the
weights) for the shared seeded Gaussian inputs `spatial_signal_inputs.npy`
[8, 4, 32] and `spatial_image_inputs.npy` [8, 1, 28, 28].

  conv1d_maxpool      Conv1d(k3, pad 1) → ReLU → Conv1d(stride 2) → MaxPool1d(2) → Flatten → Linear
  conv1d_avgpool      ... → AvgPool1d(3, stride 2, pad 1) → Flatten → Linear
  conv1d_adaptive     ... → AdaptiveAvgPool1d(5) (an AveragePool) → Flatten → Linear
  restore_deconv      Conv2d → ReLU → ConvTranspose2d(k4, stride 2, pad 1) → ReLU → Conv2d: [B, 1, 56, 56]
  restore_shuffle     Conv2d → ReLU → Conv2d → PixelShuffle(2) (DepthToSpace, CRD) → Conv2d
  upsample_nearest    Conv2d → ReLU → Upsample(x2, nearest) (Resize) → Conv2d
  upsample_bilinear   ... Upsample(x2, bilinear, align_corners=False)
  upsample_bilinear_ac  ... Upsample(x2, bilinear, align_corners=True)
  upsample_size       ... Upsample(size=(42, 42), bilinear): Resize with `sizes`

Deterministic: torch.manual_seed per model, one thread.
"""

import argparse
import os

import numpy as np
import onnx
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPSETS = (13, 17)
REF_SAMPLES = 8
SIGNAL_SHAPE = (4, 32)
IMAGE_SHAPE = (1, 28, 28)
SIGNAL_CLASSES = 5
WIDTH = 8
MAX_FIXTURE_BYTES = 300_000


def conv1d_net(pool):
    # Length 32 → 32 → 15 (stride 2) → the pool's output.
    lengths = {"max": 7, "avg": 8, "adaptive": 5}
    pools = {"max": nn.MaxPool1d(2),
             "avg": nn.AvgPool1d(3, stride=2, padding=1),
             "adaptive": nn.AdaptiveAvgPool1d(5)}
    return nn.Sequential(
        nn.Conv1d(SIGNAL_SHAPE[0], WIDTH, 3, padding=1), nn.ReLU(),
        nn.Conv1d(WIDTH, WIDTH, 3, stride=2), pools[pool], nn.Flatten(),
        nn.Linear(WIDTH * lengths[pool], SIGNAL_CLASSES))


def restore_deconv():
    return nn.Sequential(
        nn.Conv2d(1, WIDTH, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(WIDTH, WIDTH, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(WIDTH, 1, 3, padding=1))


def restore_shuffle():
    return nn.Sequential(
        nn.Conv2d(1, WIDTH, 3, padding=1), nn.ReLU(),
        nn.Conv2d(WIDTH, 4 * 4, 3, padding=1), nn.PixelShuffle(2),
        nn.Conv2d(4, 1, 3, padding=1))


def upsample_net(upsample):
    return nn.Sequential(
        nn.Conv2d(1, WIDTH, 3, padding=1), nn.ReLU(), upsample,
        nn.Conv2d(WIDTH, 1, 3, padding=1))


INPUTS = {"spatial_signal_inputs.npy": SIGNAL_SHAPE, "spatial_image_inputs.npy": IMAGE_SHAPE}
SIGNAL, IMAGE = INPUTS

MODELS = {
    "conv1d_maxpool": (lambda: conv1d_net("max"), SIGNAL),
    "conv1d_avgpool": (lambda: conv1d_net("avg"), SIGNAL),
    "conv1d_adaptive": (lambda: conv1d_net("adaptive"), SIGNAL),
    "restore_deconv": (restore_deconv, IMAGE),
    "restore_shuffle": (restore_shuffle, IMAGE),
    "upsample_nearest": (lambda: upsample_net(nn.Upsample(scale_factor=2, mode="nearest")),
                         IMAGE),
    "upsample_bilinear": (lambda: upsample_net(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)), IMAGE),
    "upsample_bilinear_ac": (lambda: upsample_net(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), IMAGE),
    "upsample_size": (lambda: upsample_net(
        nn.Upsample(size=(42, 42), mode="bilinear", align_corners=False)), IMAGE),
}


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array, dtype=np.float32))


def export(model, example, path, opset):
    torch.onnx.export(model, example, path, opset_version=opset, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    size = os.path.getsize(path)
    if size > MAX_FIXTURE_BYTES:
        raise RuntimeError(f"{path}: {size} bytes, more than {MAX_FIXTURE_BYTES}")
    ops = [n.op_type for n in proto.graph.node]
    counts = {op: ops.count(op) for op in sorted(set(ops))}
    print(f"wrote {path} ({size} bytes): {counts}")


def make_inputs(out_dir):
    torch.manual_seed(1)
    inputs = {}
    for name, shape in INPUTS.items():
        inputs[name] = torch.randn(REF_SAMPLES, *shape)
        save_npy(os.path.join(out_dir, name), inputs[name].numpy())
    return inputs


def make(name, all_inputs, out_dir):
    build, input_file = MODELS[name]
    inputs = all_inputs[input_file]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        outputs = model(inputs)
    for opset in OPSETS:
        export(model, inputs[:1], os.path.join(out_dir, f"{name}_opset{opset}.onnx"), opset)
    save_npy(os.path.join(out_dir, f"{name}_outputs.npy"), outputs.numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)
    inputs = make_inputs(args.out_dir)
    for name in MODELS:
        make(name, inputs, args.out_dir)


if __name__ == "__main__":
    main()
