"""The pipeline gates (examples/pipeline/gate.py and gate.sh) on the demo MLP.

Each gate runs against a real mixq-server: once where it must pass (the
export written, ONNX Runtime within tolerance of the job's validation
accuracy), once where it must fail (a negative --max-drop: the quantized
model would have to beat FP32 by five points) and once where it cannot run.
Run by ctest (label `py`) with the client installed by py_client_install;
$MIXQ_SERVER_BIN, $MIXQ_CLI_BIN, $MIXQ_SOURCE_DIR from CMakeLists.txt.
"""

import array
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zipfile
from typing import Any, Dict, List, Tuple

SOURCE_DIR = os.environ["MIXQ_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "support"))
from mixq_server import MixqServer  # noqa: E402

PIPELINE = os.path.join(SOURCE_DIR, "examples", "pipeline")
FASHION = "/usr/share/datasets/fashion-mnist"
# The tiny search of test_client.py: seconds per job.
DATA = ["--model", os.path.join(SOURCE_DIR, "tests", "fixtures", "mlp_fmnist.onnx"),
        "--inputs", f"{FASHION}/train-images-idx3-ubyte.gz",
        "--labels", f"{FASHION}/train-labels-idx1-ubyte.gz",
        "--normalize", "0.2860,0.3530", "--max-samples", "2000",
        "--calib-size", "256", "--finetune-steps", "10"]
VAL_FILES = ["--val-inputs", f"{FASHION}/t10k-images-idx3-ubyte.gz",
             "--val-labels", f"{FASHION}/t10k-labels-idx1-ubyte.gz"]
GATE_DEADLINE_SECONDS = 120


class GateTest:
    """The cases, for either gate (a mixin: `command` and `env` set it)."""

    server: MixqServer
    command: List[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = MixqServer()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def env(self) -> Dict[str, str]:
        return dict(os.environ, MIXQ_SERVER=self.server.address)

    def run_gate(self, *args: str) -> Tuple[int, Dict[str, Any], str]:
        """Runs the gate into a fresh directory: its exit code, metrics.json
        and that directory."""
        out = tempfile.mkdtemp(prefix="mixq-gate-")
        self.addCleanup(shutil.rmtree, out)  # type: ignore[attr-defined]
        run = subprocess.run([*self.command, *args, "--out", out],
                             env=self.env(), capture_output=True, text=True,
                             timeout=GATE_DEADLINE_SECONDS)
        sys.stderr.write(run.stderr)
        with open(os.path.join(out, "metrics.json")) as f:
            return run.returncode, json.load(f), out

    def test_passes_and_onnx_runtime_agrees(self) -> None:
        code, metrics, out = self.run_gate(*DATA, *VAL_FILES,
                                           "--target-avg-bits", "4",
                                           "--max-drop", "2")
        self.assertEqual(code, 0, metrics)
        self.assertTrue(metrics["passed"])
        self.assertLessEqual(metrics["avg_bits"], 4)
        self.assertEqual(metrics["val_samples"], 10000)
        self.assertEqual(metrics["ort_samples"], 10000)
        self.assertLessEqual(metrics["drop_points"], 2)
        self.assertAlmostEqual(
            metrics["drop_points"],
            100 * (metrics["fp32_val_accuracy"] - metrics["val_accuracy"]),
            places=3)
        self.assertLessEqual(metrics["ort_gap_points"], 1)
        self.assertTrue(os.path.getsize(os.path.join(out, "model.onnx")) > 0)
        self.assertTrue(metrics["policy_id"])

    def test_fails_when_the_drop_is_too_large(self) -> None:
        code, metrics, out = self.run_gate(*DATA, "--max-size-bytes", "60000",
                                           "--max-drop", "-5")
        self.assertEqual(code, 1, metrics)
        self.assertFalse(metrics["passed"])
        self.assertIn("--max-drop -5", metrics["reason"])
        self.assertLessEqual(metrics["size_bytes"], 60000)
        self.assertGreater(metrics["drop_points"], -5)
        self.assertFalse(os.path.exists(os.path.join(out, "model.onnx")))

    def test_cannot_run_without_a_server(self) -> None:
        env = self.env
        self.env = lambda: dict(env(), MIXQ_SERVER="127.0.0.1:1")  # type: ignore[method-assign]
        code, metrics, _ = self.run_gate(*DATA, "--target-avg-bits", "4",
                                         "--max-drop", "1")
        self.assertEqual(code, 2, metrics)
        self.assertFalse(metrics["passed"])
        self.assertIn("could not run", metrics["reason"])


def _npy(typecode: str, descr: str, shape: Tuple[int, ...],
         values: Any) -> bytes:
    """A .npy file (format 1.0) of `values`, without NumPy."""
    header = (f"{{'descr': '{descr}', 'fortran_order': False, "
              f"'shape': ({', '.join(map(str, shape))},), }}")
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) +
            header.encode("latin1") + array.array(typecode, values).tobytes())


def write_npz(path: str, samples: int) -> None:
    """The first `samples` Fashion-MNIST training images, normalised as the
    MLP expects, and their labels, as one np.savez_compressed-style .npz
    (x float32 [N, 784], y int64 [N])."""
    with gzip.open(f"{FASHION}/train-images-idx3-ubyte.gz") as f:
        pixels = f.read()[16:16 + samples * 784]
    with gzip.open(f"{FASHION}/train-labels-idx1-ubyte.gz") as f:
        labels = f.read()[8:8 + samples]
    x = _npy("f", "<f4", (samples, 784),
             ((p / 255 - 0.2860) / 0.3530 for p in pixels))
    y = _npy("q", "<i8", (samples,), list(labels))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as npz:
        npz.writestr("x.npy", x)
        npz.writestr("y.npy", y)


class PythonGateTest(GateTest, unittest.TestCase):
    command = [sys.executable, os.path.join(PIPELINE, "gate.py")]

    def test_passes_on_npz_data_checked_on_the_held_out_samples(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "fashion.npz")
            write_npz(data, 600)
            # The last 10 % (60 samples) are held out: one image is 1.7
            # points, so ORT may differ from the engine by one.
            code, metrics, _ = self.run_gate(
                "--model", DATA[1], "--inputs", data, "--labels", data,
                "--calib-size", "256", "--finetune-steps", "10",
                "--target-avg-bits", "4", "--max-drop", "10",
                "--ort-tolerance", "2")
        self.assertEqual(code, 0, metrics)
        self.assertEqual(metrics["val_samples"], 60)
        self.assertEqual(metrics["ort_samples"], 60)
        self.assertLessEqual(metrics["ort_gap_points"], 2)


class CliGateTest(GateTest, unittest.TestCase):
    command = ["bash", os.path.join(PIPELINE, "gate.sh")]

    def env(self) -> Dict[str, str]:
        return dict(super().env(), MIXQ=os.environ["MIXQ_CLI_BIN"])


if __name__ == "__main__":
    unittest.main()
