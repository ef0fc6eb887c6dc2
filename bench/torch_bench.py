#!/usr/bin/python3
"""Times PyTorch on the models mixq-bench times, for scripts/bench.sh.

    /usr/bin/python3 bench/torch_bench.py [--batch 128] [--threads 2] [--min-time 2] [--no-train] MODEL.onnx...

Each ONNX fixture is mapped (by file name) to the PyTorch architecture that
produced it, rebuilt with the builders of scripts/make_models.py,
scripts/make_cnn_models.py and scripts/make_quality_model.py (the quality
bench's ViT and GRU, build-quality/quality_{vit,gru}.onnx), and loaded with the ONNX file's initializers
wherever their names are PyTorch's (all of them for the MLP and the
BatchNormalization-kept CNNs). The BN-folded ResNet is the same network with
each Conv-BN pair fused (torch.nn.utils.fusion.fuse_conv_bn_eval), i.e. the
graph the folded export holds. The real-shape models of
bench/make_real_models.py (resnet18.onnx, ..., 3x224x224) are rebuilt with its
build_real (torchvision, same seed) and loaded the same way.

Measured like mixq-bench: seeded Gaussian inputs, 2 warm-up iterations (1 if it
alone took --min-time), then repeated until --min-time seconds have passed and
at least 3 iterations ran (1 if that one took --min-time); throughput from the
median batch time.
- inference: model.eval() under torch.inference_mode().
- train step (unless --no-train): zero_grad, forward, cross-entropy, backward,
  Adam step. BN layers stay in eval mode (running statistics), which is the
  function mixq trains.
Prints `RESULT torch <model> inference|train <samples/s>` lines.

Debian's PyTorch falls back to the reference BLAS (~4 GFLOP/s) unless
libopenblas0-pthread is installed; scripts/install-deps.sh --python installs it.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import onnx
import onnx.numpy_helper
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import make_cnn_models  # noqa: E402
import make_models  # noqa: E402
import make_quality_model  # noqa: E402
import make_real_models  # noqa: E402 (bench/, this script's directory)

WARMUP_ITERATIONS = 2
MIN_ITERATIONS = 3
MLP_DIMS = (make_models.IMAGE_SIDE * make_models.IMAGE_SIDE, 128, 64, 10)
FMNIST_INPUT = (1, make_models.IMAGE_SIDE, make_models.IMAGE_SIDE)


def fuse_conv_bn(module):
    """Replaces every Conv2d whose next sibling module is a BatchNorm2d by the
    fused Conv2d (and the BN by Identity), recursively. The ResNet registers
    each BN right after its Conv (stem, convN/bnN, shortcut)."""
    children = dict(module.named_children())
    names = list(children)
    for i, name in enumerate(names):
        child = children[name]
        if isinstance(child, nn.Conv2d):
            partner = names[i + 1] if i + 1 < len(names) else None
            if partner is not None and isinstance(children[partner], nn.BatchNorm2d):
                fused = torch.nn.utils.fusion.fuse_conv_bn_eval(child, children[partner])
                setattr(module, name, fused)
                setattr(module, partner, nn.Identity())
        else:
            fuse_conv_bn(child)
    return module


def build(name):
    """(model, input shape without batch, fuse?) for a fixture's file stem."""
    if name.startswith("mlp_fmnist"):
        return make_models.make_mlp(MLP_DIMS), FMNIST_INPUT, False
    if name.startswith("resnet_fmnist"):
        return make_cnn_models.make_resnet(), FMNIST_INPUT, name.endswith("folded")
    if name.startswith("mobilenet_v2"):
        model = make_cnn_models.make_mobilenet(view_flatten="view" in name)
        return model, make_cnn_models.mobilenet_input_shape(1)[1:], False
    if name.startswith("quality_vit"):
        return make_quality_model.QualityVit(), FMNIST_INPUT, False
    if name.startswith("quality_gru"):
        return make_quality_model.QualityGru(), FMNIST_INPUT, False
    if name in make_real_models.REAL_MODELS:
        return make_real_models.build_real(name), make_real_models.REAL_INPUT, False
    raise ValueError(f"no PyTorch architecture known for {name}")


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    model, input_shape, fuse = build(name)
    state = model.state_dict()
    loaded = 0
    for init in onnx.load(path).graph.initializer:
        if init.name in state:
            state[init.name] = torch.from_numpy(onnx.numpy_helper.to_array(init).copy())
            loaded += 1
    model.load_state_dict(state)
    model.eval()
    if fuse:
        model = fuse_conv_bn(model)
    return name, model, input_shape, loaded


def time_loop(min_seconds, step):
    """(median seconds per step, steps timed), as mixq-bench's TimeLoop."""
    warmup_start = time.perf_counter()
    for _ in range(WARMUP_ITERATIONS):
        step()
        if time.perf_counter() - warmup_start >= min_seconds:
            break
    times = []
    start = last = time.perf_counter()
    while (not times or last - start < min_seconds
           or (len(times) < MIN_ITERATIONS and times[0] < min_seconds)):
        step()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return statistics.median(times), len(times)


def bench(path, args):
    name, model, input_shape, loaded = load(path)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((args.batch,) + tuple(input_shape), generator=generator)
    with torch.inference_mode():
        classes = model(x[:1]).shape[1]
    labels = torch.randint(0, classes, (args.batch,), generator=generator)
    print(f"{name}: batch {args.batch}, {torch.get_num_threads()} threads, "
          f"{loaded} initializers loaded from the ONNX file")

    def infer():
        with torch.inference_mode():
            model(x)

    optimizer = torch.optim.Adam(model.parameters())

    def train():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()

    results = {}
    steps = [("inference", infer)] + ([] if args.no_train else [("train", train)])
    for kind, step in steps:
        per_batch, iterations = time_loop(args.min_time, step)
        results[kind] = args.batch / per_batch
        print(f"  {kind:<10} {results[kind]:10.1f} samples/s  "
              f"(median {1e3 * per_batch:.2f} ms/batch of {iterations})")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS   {peak_mib:10.1f} MiB")
    for kind, value in results.items():
        print(f"RESULT torch {name} {kind} {value:.1f}")
    print(f"RESULT torch {name} peak_rss_mib {peak_mib:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for path in args.models:
        bench(path, args)


if __name__ == "__main__":
    main()
