#!/usr/bin/python3
"""Writes fuzz seeds from libonnx-testdata: every case's model.onnx, and a
copy whose graph inputs after the first hold test_data_set_0's values as
initializers (as tests/engine/conformance_test.cc runs them), so that seeds
with several inputs import and run. Needs python3-onnx (Debian's, for
/usr/bin/python3).

Usage: make_seeds.py DATA_ROOT OUT_DIR
"""
import os
import shutil
import sys

import onnx

MAX_SEED_BYTES = 64 * 1024


def main(root, out):
    os.makedirs(out, exist_ok=True)
    written = 0
    for suite in sorted(os.listdir(root)):
        suite_dir = os.path.join(root, suite)
        if not os.path.isdir(suite_dir):
            continue
        for case in sorted(os.listdir(suite_dir)):
            case_dir = os.path.join(suite_dir, case)
            path = os.path.join(case_dir, "model.onnx")
            if not os.path.exists(path):
                continue
            name = f"{suite}_{case}"
            shutil.copyfile(path, os.path.join(out, name + ".onnx"))
            written += 1
            model = onnx.load(path)
            graph = model.graph
            initialized = {t.name for t in graph.initializer}
            fed = [i for i in graph.input if i.name not in initialized]
            data_dir = os.path.join(case_dir, "test_data_set_0")
            turned = []
            for k, value in enumerate(fed[1:], start=1):
                pb = os.path.join(data_dir, f"input_{k}.pb")
                if not value.type.HasField("tensor_type") or not os.path.exists(pb):
                    continue
                tensor = onnx.TensorProto()
                with open(pb, "rb") as f:
                    if not tensor.ParseFromString(f.read()):
                        continue
                tensor.name = value.name
                graph.initializer.append(tensor)
                turned.append(value.name)
            if not turned:
                continue
            kept = [i for i in graph.input if i.name not in turned]
            del graph.input[:]
            graph.input.extend(kept)
            data = model.SerializeToString()
            if len(data) <= MAX_SEED_BYTES:
                with open(os.path.join(out, name + "_fed.onnx"), "wb") as f:
                    f.write(data)
                written += 1
    print(f"{written} seeds in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
