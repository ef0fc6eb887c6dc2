#!/usr/bin/python3
"""Makes the ONNX models and reference data in tests/fixtures/.

Run with Debian's system interpreter (it has torch, onnx and numpy):

    /usr/bin/python3 scripts/make_models.py

Deterministic: torch.manual_seed(0), one thread, a seeded shuffle. Writes

  mlp_fmnist.onnx              784-128-64-10 MLP trained on Fashion-MNIST, opset 13
  mlp_fmnist_ref_inputs.npy    first 16 test images, normalised, float32 [16,1,28,28]
  mlp_fmnist_ref_logits.npy    PyTorch's logits for them, float32 [16,10]
  tiny_mlp_opset{11,13,17}.onnx  untrained 8-16-4 MLP exported at three opsets
  tiny_mlp_inputs.npy          float32 [4,8] inputs for it
  tiny_mlp_logits.npy          PyTorch's logits, float32 [4,4] (same for every opset)
  unsupported_op.onnx          a valid model with a Hardmax node, which mixq does not support

Images are scaled to [0,1] (x/255) and then normalised with the Fashion-MNIST
training-set statistics below; the demo passes the same constants with
`--normalize 0.2860,0.3530`.
"""

import argparse
import collections
import gzip
import os
import time

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch
from torch import nn

# Mean and standard deviation of the Fashion-MNIST training pixels after x/255.
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
IMAGE_SIDE = 28

EPOCHS = 3
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
NUM_REF_SAMPLES = 16
MAIN_OPSET = 13
TINY_OPSETS = (11, 13, 17)
TINY_DIMS = (8, 16, 4)
TINY_BATCH = 4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx(path, magic):
    """Returns the uint8 payload of a gzip IDX file as an array of its dims."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    got = int.from_bytes(data[0:4], "big")
    if got != magic:
        raise ValueError(f"{path}: magic {got:#010x}, expected {magic:#010x}")
    rank = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    offset = 4 + 4 * rank
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_split(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                      IDX_IMAGES_MAGIC)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"),
                      IDX_LABELS_MAGIC)
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(FMNIST_MEAN)) / np.float32(FMNIST_STD)
    x = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def make_mlp(dims):
    """Flatten + Linear/ReLU stack; Linear modules are named fc1, fc2, ... so
    the ONNX initializers are fc1.weight, fc1.bias, ..."""
    layers = [("flatten", nn.Flatten())]
    for i in range(len(dims) - 1):
        layers.append((f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1])))
        if i + 2 < len(dims):
            layers.append((f"relu{i + 1}", nn.ReLU()))
    return nn.Sequential(collections.OrderedDict(layers))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def train(model, x, y):
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(0)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=shuffle)
        total = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start:start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(x):.4f}")
    model.eval()


def export(model, example, path, opset):
    torch.onnx.export(model, example, path, opset_version=opset,
                      do_constant_folding=True, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    initializers = sorted(t.name for t in proto.graph.initializer)
    expected = sorted(name for name, _ in model.named_parameters())
    if initializers != expected:
        raise RuntimeError(f"{path}: initializers {initializers}, expected {expected}")
    ops = [n.op_type for n in proto.graph.node]
    print(f"wrote {path} ({os.path.getsize(path)} bytes): opset {opset}, ops {ops}, "
          f"initializers {initializers}")


def save_npy(path, array):
    np.save(path, np.ascontiguousarray(array))
    print(f"wrote {path} ({os.path.getsize(path)} bytes): {array.dtype} {list(array.shape)}")


def make_fmnist_mlp(data_dir, out_dir):
    x_train, y_train = load_split(data_dir, "train")
    x_test, y_test = load_split(data_dir, "t10k")
    model = make_mlp((IMAGE_SIDE * IMAGE_SIDE, 128, 64, 10))
    start = time.time()
    train(model, x_train, y_train)
    print(f"trained in {time.time() - start:.1f} s; "
          f"test accuracy {100 * accuracy(model, x_test, y_test):.2f}%")

    export(model, x_test[:1], os.path.join(out_dir, "mlp_fmnist.onnx"), MAIN_OPSET)
    ref_inputs = x_test[:NUM_REF_SAMPLES]
    with torch.no_grad():
        ref_logits = model(ref_inputs)
    save_npy(os.path.join(out_dir, "mlp_fmnist_ref_inputs.npy"), ref_inputs.numpy())
    save_npy(os.path.join(out_dir, "mlp_fmnist_ref_logits.npy"), ref_logits.numpy())


def make_tiny_mlp(out_dir):
    model = make_mlp(TINY_DIMS).eval()
    inputs = torch.randn(TINY_BATCH, TINY_DIMS[0])
    for opset in TINY_OPSETS:
        export(model, inputs, os.path.join(out_dir, f"tiny_mlp_opset{opset}.onnx"), opset)
    with torch.no_grad():
        logits = model(inputs)
    save_npy(os.path.join(out_dir, "tiny_mlp_inputs.npy"), inputs.numpy())
    save_npy(os.path.join(out_dir, "tiny_mlp_logits.npy"), logits.numpy())


def make_unsupported_op(out_dir):
    """input [batch,4] -> Gemm(fc.weight, fc.bias) -> Hardmax -> output [batch,4].
    Hardmax (a one-hot argmax, with no useful gradient) is not among mixq's operators."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    bias = np.zeros(4, dtype=np.float32)
    graph = onnx.helper.make_graph(
        nodes=[
            onnx.helper.make_node("Gemm", ["input", "fc.weight", "fc.bias"], ["hidden"],
                                  name="fc", transB=1),
            onnx.helper.make_node("Hardmax", ["hidden"], ["output"], name="hardmax"),
        ],
        name="unsupported_op",
        inputs=[onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                                   ["batch", 4])],
        outputs=[onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT,
                                                    ["batch", 4])],
        initializer=[onnx.numpy_helper.from_array(weight, "fc.weight"),
                     onnx.numpy_helper.from_array(bias, "fc.bias")])
    model = onnx.helper.make_model(graph, producer_name="mixq make_models.py",
                                   opset_imports=[onnx.helper.make_opsetid("", MAIN_OPSET)])
    onnx.checker.check_model(model)
    path = os.path.join(out_dir, "unsupported_op.onnx")
    onnx.save(model, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes): ops ['Gemm', 'Hardmax']")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "tests", "fixtures"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)
    make_fmnist_mlp(args.data_dir, args.out_dir)
    make_tiny_mlp(args.out_dir)
    make_unsupported_op(args.out_dir)


if __name__ == "__main__":
    main()
