#!/usr/bin/python3
"""Trains the Fashion-MNIST ResNet (or, with --arch, a VGG-style CNN, a ViT, a GRU or a 2x super-resolution model) used by the quality benchmark and exports it to ONNX.

Run with Debian's system interpreter (torch 1.13, torchvision 0.14, onnx 1.12, numpy;
`scripts/install-deps.sh --python` installs them):

    /usr/bin/python3 scripts/make_quality_model.py            # ~10 minutes on 2 cores
    /usr/bin/python3 scripts/make_quality_model.py --epochs 2 --out /tmp/q.onnx   # smoke run

Network (QualityResNet, ~78k parameters, ~9.4 M multiply-adds per image):

    stem   conv3x3 1->16, BN, ReLU                    28x28
    block1 BasicBlock 16->16, stride 1                28x28
    block2 BasicBlock 16->32, stride 2 (1x1 shortcut) 14x14
    block3 BasicBlock 32->64, stride 2 (1x1 shortcut)  7x7
    global average pool -> flatten -> linear 64->10

BasicBlock is the one of scripts/make_cnn_models.py (conv-BN-ReLU-conv-BN + shortcut, ReLU).
BatchNormalization is kept in the export (mixq folds it); input `input` [batch,1,28,28],
output `logits` [batch,10], symbolic batch, opset 13.

Recipe: SGD (momentum 0.9, Nesterov, weight decay 5e-4 on conv/linear weights only),
one-cycle learning rate peaking at 0.1, batch 128, random horizontal flip and random
crop with 2-pixel padding (padded with the normalised value of a black pixel), no label
smoothing. Inputs are x/255 normalised with mean 0.2860 and std 0.3530 (the C++ side
uses the same numbers).

Deterministic for a given machine and thread count: torch.manual_seed(seed), seeded
generators for shuffling and augmentation, torch.use_deterministic_algorithms(True).

Writes <out> and <out>.json ({"test_accuracy" (percent), "params", "epochs", "seed",
"mean", "std", "seconds" (wall time of the training loop, including the ~5 s per-epoch
test evaluation that the log prints)}).

On a quiet 2-core machine an epoch takes ~35-40 s, so the default 15 epochs take ~10 min;
when the cores are shared, epochs can take several times as long.
"""

import argparse
import json
import os
import sys
import time

import onnx
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_cnn_models  # noqa: E402  (BasicBlock, export)
import make_models  # noqa: E402  (IDX loader, normalisation constants, accuracy)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUM_CLASSES = 10
WIDTHS = (16, 32, 64)
BATCH = 128
EPOCHS = 15
MAX_LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
PAD = 2
EVAL_BATCH = 1000
BN_BIAS_STD = 0.01


class QualityResNet(nn.Module):
    """stem (conv3x3-BN-ReLU, 16 ch) -> BasicBlock 16->16 -> BasicBlock 16->32 /2
    -> BasicBlock 32->64 /2 -> global average pool -> flatten -> fc 64->10."""

    def __init__(self, widths=WIDTHS):
        super().__init__()
        c1, c2, c3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c1), nn.ReLU())
        self.block1 = make_cnn_models.BasicBlock(c1, c1, 1)
        self.block2 = make_cnn_models.BasicBlock(c1, c2, 2)
        self.block3 = make_cnn_models.BasicBlock(c2, c3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, NUM_CLASSES)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class QualityVgg(nn.Module):
    """The second architecture of the quality benchmark, unlike the ResNet in where its
    weights sit: a plain VGG-style stack with most parameters in a wide classifier.
    conv3x3 1->32, BN, ReLU, conv3x3 32->32, BN, ReLU, maxpool (14x14)
    -> conv3x3 32->64, BN, ReLU, conv3x3 64->64, BN, ReLU, maxpool (7x7)
    -> flatten (3136) -> fc 3136->128, ReLU -> fc 128->10   (468k parameters)."""

    def __init__(self):
        super().__init__()

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*conv(1, 32), *conv(32, 32), nn.MaxPool2d(2),
                                      *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, NUM_CLASSES)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class QualityVit(nn.Module):
    """A small vision transformer, the quality benchmark's non-CNN classifier: 7x7
    patches (a conv of stride 7: 16 tokens of 64), a class token expanded to the batch,
    learned position embeddings, 2 pre-norm encoder blocks (4 heads, MLP 128, exact
    GELU -> Erf in ONNX), LayerNorm, head on the class token (~70k parameters)."""

    def __init__(self, dim=64, depth=2, heads=4, mlp=128, patch=7):
        super().__init__()
        tokens = (28 // patch) ** 2
        self.patch = nn.Conv2d(1, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, 16, dim]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


class QualityGru(nn.Module):
    """A row-sequence classifier: each of the 28 image rows is a time step of a
    GRU(28 -> 96), the last hidden state feeds a linear 96->10 (~37k parameters)."""

    def __init__(self, hidden=96):
        super().__init__()
        self.rnn = nn.GRU(28, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x.squeeze(1))  # [B, 28, hidden]
        return self.fc(out[:, -1])


class QualityRestore(nn.Module):
    """2x super-resolution, the quality benchmark's label-free model (searched with
    the distill objective, judged by PSNR). The graph starts with the degradation, a
    2x2 average pool from the 28x28 input to a 14x14 low-resolution image, so the
    bench feeds the test images unchanged and the target is the input itself; the
    pool has no weights and the first conv sees exactly the low-resolution image.
    conv3x3 1->32, ReLU, conv3x3 32->32, ReLU, conv3x3 32->32, ReLU,
    conv3x3 32->64 (14x14) -> PixelShuffle 2 (DepthToSpace, CRD: 16 x 28x28), ReLU
    -> conv3x3 16->1 (~38k parameters); the output is in the input's normalised
    units. PixelShuffle rather than ConvTranspose: PyTorch 1.13's CPU backward of
    ConvTranspose2d made a training step 3x slower (1.6 s against 0.5 s at batch 128
    on one thread)."""

    def __init__(self, width=32, up=16, scale=2):
        super().__init__()
        self.body = nn.Sequential(nn.AvgPool2d(scale),
                                  nn.Conv2d(1, width, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(width, up * scale * scale, 3, 1, 1),
                                  nn.PixelShuffle(scale), nn.ReLU(),
                                  nn.Conv2d(up, 1, 3, 1, 1))

    def forward(self, x):
        return self.body(x)


ARCHITECTURES = {"resnet": lambda: QualityResNet(), "vgg": lambda: QualityVgg(),
                 "vit": lambda: QualityVit(), "gru": lambda: QualityGru(),
                 "restore": lambda: QualityRestore()}
# Trained with AdamW (the SGD recipe of the CNNs does not train them well).
ADAMW_ARCHITECTURES = {"vit": 2e-3, "gru": 3e-3, "restore": 2e-3}
# The restoration model's images: PSNR on pixels in [0, 1] (de-normalised,
# clamped), averaged over images, as mixq-quality-bench --metric psnr computes it.
PEAK = 1.0
ADAMW_WEIGHT_DECAY = 0.05


def make_model(arch="resnet"):
    """Kaiming-normal convs; BN biases start at small random values rather than zero
    (see make_cnn_models.make_resnet: otherwise the two BN biases feeding a residual Add
    stay equal and torch.onnx aliases one to the other through an Identity node)."""
    model = ARCHITECTURES[arch]()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.bias, std=BN_BIAS_STD)
    return model


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def augment(x, generator):
    """Per-sample random crop (2-pixel padding with the normalised black value) and
    random horizontal flip of a normalised batch [B,1,H,W]."""
    b, c, h, w = x.shape
    black = -make_models.FMNIST_MEAN / make_models.FMNIST_STD
    padded = F.pad(x, (PAD, PAD, PAD, PAD), value=black)
    oy = torch.randint(0, 2 * PAD + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * PAD + 1, (b,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)[None, :])[:, :, None]  # [B,H,1]
    cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, :]  # [B,1,W]
    flip = torch.rand(b, generator=generator) < 0.5
    cols = torch.where(flip[:, None, None], cols.flip(2), cols)
    out = padded[torch.arange(b)[:, None, None], 0, rows, cols]  # [B,H,W]
    return out.unsqueeze(1).contiguous()


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            logits = model(x[start:start + EVAL_BATCH])
            correct += (logits.argmax(dim=1) == y[start:start + EVAL_BATCH]).sum().item()
    return 100.0 * correct / len(x)


def denormalise(x):
    return (x * make_models.FMNIST_STD + make_models.FMNIST_MEAN).clamp(0.0, 1.0)


def psnr(restored, clean):
    """Mean over images of 10 log10(PEAK^2 / MSE), both in normalised units."""
    mse = (denormalise(restored) - denormalise(clean)).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(PEAK * PEAK / mse)).mean().item()


def evaluate_psnr(model, x):
    """The model's PSNR on `x` (the input is the clean target), and bilinear
    upsampling's of the same low-resolution images (the baseline to beat)."""
    model.eval()
    restored, bilinear = [], []
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            clean = x[start:start + EVAL_BATCH]
            restored.append(model(clean))
            bilinear.append(F.interpolate(F.avg_pool2d(clean, 2), scale_factor=2,
                                          mode="bilinear", align_corners=False))
    return psnr(torch.cat(restored), x), psnr(torch.cat(bilinear), x)


def train(model, x, y, x_test, y_test, epochs, seed, arch):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    max_lr = ADAMW_ARCHITECTURES.get(arch, MAX_LR)
    if arch in ADAMW_ARCHITECTURES:
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW_WEIGHT_DECAY},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=max_lr)
    else:
        optimizer = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                     {"params": no_decay, "weight_decay": 0.0}],
                                    lr=max_lr, momentum=MOMENTUM, nesterov=True)
    steps_per_epoch = (len(x) + BATCH - 1) // BATCH
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    aug = torch.Generator().manual_seed(seed + 1)
    start_time = time.time()
    for epoch in range(epochs):
        model.train()
        epoch_start = time.time()
        order = torch.randperm(len(x), generator=shuffle)
        total, correct = 0.0, 0
        for start in range(0, len(x), BATCH):
            batch = order[start:start + BATCH]
            inputs = augment(x[batch], aug)
            optimizer.zero_grad(set_to_none=True)
            outputs = model(inputs)
            # The restoration model's target is its own (clean) input.
            loss = (F.mse_loss(outputs, inputs) if arch == "restore"
                    else loss_fn(outputs, y[batch]))
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            if arch != "restore":
                correct += (outputs.argmax(dim=1) == y[batch]).sum().item()
        train_seconds = time.time() - epoch_start
        if arch == "restore":
            metric = f"test PSNR {evaluate_psnr(model, x_test)[0]:.2f} dB"
        else:
            metric = (f"train acc {100.0 * correct / len(x):.2f}%, "
                      f"test acc {evaluate(model, x_test, y_test):.2f}%")
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, {metric}, "
              f"{train_seconds:.1f} s ({len(x) / train_seconds:.0f} samples/s), "
              f"elapsed {time.time() - start_time:.0f} s", flush=True)
    model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default=os.path.join(REPO, "build-quality", "quality_resnet.onnx"))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet",
                        help="resnet (QualityResNet), vgg (QualityVgg, the second "
                             "architecture of the quality benchmark: "
                             "--arch vgg --epochs 6 gave 93.19 %% test accuracy), "
                             "vit (QualityVit), gru (QualityGru) or restore "
                             "(QualityRestore, judged by PSNR)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)

    mean, std = make_models.FMNIST_MEAN, make_models.FMNIST_STD
    print(f"normalisation: (x/255 - {mean:.4f}) / {std:.4f}")
    x_train, y_train = make_models.load_split(args.data_dir, "train")
    x_test, y_test = make_models.load_split(args.data_dir, "t10k")
    model = make_model(args.arch)
    params = count_params(model)
    print(f"{type(model).__name__} ({args.arch}): {params} parameters; "
          f"{args.epochs} epochs, batch {BATCH}, {args.threads} threads, seed {args.seed}")

    start = time.time()
    train(model, x_train, y_train, x_test, y_test, args.epochs, args.seed, args.arch)
    seconds = time.time() - start

    make_cnn_models.export(model, x_test[:1], args.out,
                           keep_batch_norm=args.arch in ("resnet", "vgg"))
    onnx.checker.check_model(onnx.load(args.out))
    print(f"parameters: {params}")
    summary = {"arch": args.arch, "params": params, "epochs": args.epochs, "seed": args.seed,
               "mean": mean, "std": std, "seconds": round(seconds, 1)}
    # Eval mode: the exported weights.
    if args.arch == "restore":
        test_psnr, bilinear_psnr = evaluate_psnr(model, x_test)
        print(f"test PSNR (PyTorch, exported weights): {test_psnr:.2f} dB on {len(x_test)} "
              f"images; bilinear upsampling {bilinear_psnr:.2f} dB")
        summary.update(test_psnr=round(test_psnr, 2), bilinear_psnr=round(bilinear_psnr, 2))
    else:
        test_accuracy = evaluate(model, x_test, y_test)
        print(f"test accuracy (PyTorch, eval mode, exported weights): {test_accuracy:.2f}% "
              f"on {len(x_test)} images")
        summary["test_accuracy"] = round(test_accuracy, 2)
    print(f"training time: {seconds:.1f} s")
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}.json: {json.dumps(summary)}")


if __name__ == "__main__":
    main()
