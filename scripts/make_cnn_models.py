#!/usr/bin/python3
"""Makes the CNN models and reference data in tests/fixtures/.

Run with Debian's system interpreter (torch 1.13, torchvision 0.14, onnx 1.12,
numpy; `scripts/install-deps.sh --python` installs them):

    /usr/bin/python3 scripts/make_cnn_models.py     # about 2 minutes on 2 cores

Writes (see tests/fixtures/README.md for the details):

  resnet_fmnist_bn.onnx          ResNet-style Fashion-MNIST CNN, trained, BatchNormalization kept
  resnet_fmnist_folded.onnx      the same network, BatchNormalization folded into Conv
  resnet_fmnist_inputs.npy       first 8 test images, normalised, float32 [8,1,28,28]
  resnet_fmnist_logits.npy       PyTorch's logits for them, float32 [8,10]
  mobilenet_v2_bn.onnx           torchvision mobilenet_v2(width_mult=0.35, num_classes=10),
                                 random weights, calibrated BN statistics, BN kept
  mobilenet_v2_view_bn.onnx      the same weights, flattened with x.view(x.size(0), -1): the
                                 batch flows through a Shape/Gather/Unsqueeze/Concat sub-graph
  mobilenet_v2_inputs.npy        seeded Gaussian inputs, float32 [4,3,32,32]
  mobilenet_v2_logits.npy        PyTorch's logits, float32 [4,10] (shared by both exports)

Every export has input `input` and output `logits` with a symbolic batch
(`dim_param "batch"`). The builders (make_resnet, make_mobilenet) are imported
by bench/torch_bench.py, so the benchmark times the same architectures.

Deterministic for a given machine: torch.manual_seed(0), a seeded shuffle,
torch.use_deterministic_algorithms(True). Training uses two threads, so the
trained weights can differ in the last bits from another CPU's.
"""

import argparse
import os
import sys
import time

import onnx
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models  # noqa: E402  (shared IDX reader, normalisation, .npy writer)

OPSET = 13
NUM_CLASSES = 10
TRAIN_THREADS = 2

# ResNet-style Fashion-MNIST CNN.
RESNET_WIDTHS = (16, 32)
RESNET_EPOCHS = 2
RESNET_BATCH = 128
RESNET_LR = 4e-3
RESNET_REF_SAMPLES = 8
RESNET_BN_BIAS_STD = 0.01

# MobileNetV2: width 0.35 keeps it at 0.41 M parameters (1.6 MB of float32).
MOBILENET_WIDTH = 0.35
MOBILENET_SIDE = 32  # total stride 32: the last feature map is 1x1
MOBILENET_CALIBRATION_BATCHES = 8
MOBILENET_CALIBRATION_BATCH = 32
MOBILENET_REF_SAMPLES = 4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv-BN when the shape
    changes), then ReLU: the ResNet-18 block."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class FashionResNet(nn.Module):
    """stem (conv3x3-BN-ReLU, 16 ch, 28x28) → block1 (16 ch) → block2 (32 ch,
    stride 2, 14x14) → block3 (32 ch) → global average pool → flatten → fc."""

    def __init__(self):
        super().__init__()
        narrow, wide = RESNET_WIDTHS
        self.stem = nn.Sequential(nn.Conv2d(1, narrow, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(narrow), nn.ReLU())
        self.block1 = BasicBlock(narrow, narrow, 1)
        self.block2 = BasicBlock(narrow, wide, 2)
        self.block3 = BasicBlock(wide, wide, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(wide, NUM_CLASSES)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def make_resnet():
    """BatchNormalization biases start at small random values instead of zero:
    the two biases feeding a residual Add get identical gradients, so from
    equal starts they would stay equal and torch.onnx would alias one to the
    other through an Identity node."""
    model = FashionResNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.bias, std=RESNET_BN_BIAS_STD)
    return model


class ViewFlattenMobileNetV2(torchvision.models.MobileNetV2):
    """torchvision's MobileNetV2 with the flatten spelled x.view(x.size(0), -1),
    as much older code does: exported with a dynamic batch it becomes
    Shape → Gather → Unsqueeze → Concat → Reshape."""

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = x.view(x.size(0), -1)
        return self.classifier(x)


def make_mobilenet(view_flatten=False):
    if view_flatten:
        return ViewFlattenMobileNetV2(width_mult=MOBILENET_WIDTH, num_classes=NUM_CLASSES)
    return torchvision.models.mobilenet_v2(width_mult=MOBILENET_WIDTH,
                                           num_classes=NUM_CLASSES)


def mobilenet_input_shape(batch):
    return (batch, 3, MOBILENET_SIDE, MOBILENET_SIDE)


def export(model, example, path, keep_batch_norm):
    """Exports `model` (in eval mode) with a symbolic batch. keep_batch_norm:
    TrainingMode.PRESERVE on an eval-mode model writes BatchNormalization
    nodes (inference form, running statistics as initializers); the default
    (TrainingMode.EVAL) folds them into the preceding Conv. Constant folding is
    off when keeping BN, so no initializer is rewritten."""
    model.eval()
    options = {}
    if keep_batch_norm:
        options = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    torch.onnx.export(model, example, path, opset_version=OPSET, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      **options)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    has_bn = "BatchNormalization" in ops
    if has_bn != keep_batch_norm:
        raise RuntimeError(f"{path}: BatchNormalization present={has_bn}, "
                           f"expected {keep_batch_norm}")
    if keep_batch_norm:
        # torch.onnx deduplicates equal initializers through Identity nodes
        # (e.g. a running_var of ones aliasing a BN weight of ones); the
        # fixtures must keep every parameter and statistic as its own
        # initializer.
        initializers = sorted(t.name for t in proto.graph.initializer)
        expected = sorted(name for name, _ in model.state_dict().items()
                          if not name.endswith("num_batches_tracked"))
        if initializers != expected or "Identity" in ops:
            raise RuntimeError(f"{path}: initializers {initializers}, expected {expected}")
    counts = {op: ops.count(op) for op in sorted(set(ops))}
    print(f"wrote {path} ({os.path.getsize(path)} bytes): {len(ops)} nodes {counts}")


def train_resnet(model, x, y):
    optimizer = torch.optim.Adam(model.parameters(), lr=RESNET_LR)
    steps_per_epoch = (len(x) + RESNET_BATCH - 1) // RESNET_BATCH
    # One-cycle schedule (warm up, then anneal to ~0): two epochs at a
    # constant rate end at a noisy point several points of accuracy lower.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=RESNET_LR, total_steps=RESNET_EPOCHS * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(0)
    model.train()
    for epoch in range(RESNET_EPOCHS):
        order = torch.randperm(len(x), generator=shuffle)
        total = 0.0
        for start in range(0, len(x), RESNET_BATCH):
            batch = order[start:start + RESNET_BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(x):.4f}")
    model.eval()


def make_fmnist_resnet(data_dir, out_dir):
    x_train, y_train = make_models.load_split(data_dir, "train")
    x_test, y_test = make_models.load_split(data_dir, "t10k")
    model = make_resnet()
    start = time.time()
    train_resnet(model, x_train, y_train)
    print(f"trained in {time.time() - start:.1f} s; "
          f"test accuracy {100 * make_models.accuracy(model, x_test, y_test):.2f}%")

    example = x_test[:1]
    export(model, example, os.path.join(out_dir, "resnet_fmnist_bn.onnx"), True)
    export(model, example, os.path.join(out_dir, "resnet_fmnist_folded.onnx"), False)
    inputs = x_test[:RESNET_REF_SAMPLES]
    with torch.no_grad():
        logits = model(inputs)
    make_models.save_npy(os.path.join(out_dir, "resnet_fmnist_inputs.npy"), inputs.numpy())
    make_models.save_npy(os.path.join(out_dir, "resnet_fmnist_logits.npy"), logits.numpy())


def calibrate_mobilenet(model):
    """Random weights, but BatchNormalization that is not the identity:
    random affine parameters, then running statistics accumulated (cumulative
    average) over Gaussian batches in train mode. Calibrated statistics keep
    the activations of the deep random network O(1). The classifier gets
    nn.Linear's default initialisation instead of torchvision's N(0, 0.01), so
    the logits are O(1) too."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
            module.momentum = None
        elif isinstance(module, nn.Linear):
            module.reset_parameters()
    model.train()
    with torch.no_grad():
        for _ in range(MOBILENET_CALIBRATION_BATCHES):
            model(torch.randn(mobilenet_input_shape(MOBILENET_CALIBRATION_BATCH)))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    model.eval()


def make_mobilenet_fixtures(out_dir):
    model = make_mobilenet()
    calibrate_mobilenet(model)
    view_model = make_mobilenet(view_flatten=True)
    view_model.load_state_dict(model.state_dict())
    view_model.eval()

    inputs = torch.randn(mobilenet_input_shape(MOBILENET_REF_SAMPLES))
    export(model, inputs[:1], os.path.join(out_dir, "mobilenet_v2_bn.onnx"), True)
    export(view_model, inputs[:1], os.path.join(out_dir, "mobilenet_v2_view_bn.onnx"), True)
    with torch.no_grad():
        logits = model(inputs)
        view_logits = view_model(inputs)
    if not torch.equal(logits, view_logits):
        raise RuntimeError("the view-flatten MobileNetV2 disagrees with torchvision's")
    make_models.save_npy(os.path.join(out_dir, "mobilenet_v2_inputs.npy"), inputs.numpy())
    make_models.save_npy(os.path.join(out_dir, "mobilenet_v2_logits.npy"), logits.numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)
    make_fmnist_resnet(args.data_dir, args.out_dir)
    make_mobilenet_fixtures(args.out_dir)


if __name__ == "__main__":
    main()
