"""mixq_client against a real mixq-server (and, for reconnection, a fake).

Run by ctest (label `py`) with the package installed in a venv by the
py_client_install fixture; $MIXQ_SERVER_BIN, $MIXQ_RUN_BIN and
$MIXQ_SOURCE_DIR come from tests/clients/python/CMakeLists.txt.
"""

import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import unittest
from typing import List
from unittest import mock

import grpc

import mixq_client
from mixq_client import Client, MixqError, TlsConfig, WatchRetry
from mixq_client import client as client_module
from mixq_client._proto import mixq_pb2, mixq_pb2_grpc

SOURCE_DIR = os.environ["MIXQ_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "support"))
from mixq_server import MixqServer  # noqa: E402

FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures")
MODEL = os.path.join(FIXTURES, "mlp_fmnist.onnx")
FASHION = "/usr/share/datasets/fashion-mnist"
IMAGES = f"{FASHION}/train-images-idx3-ubyte.gz"
LABELS = f"{FASHION}/train-labels-idx1-ubyte.gz"
NORMALIZE = (0.2860, 0.3530)
# A search that ends in seconds: 2000 samples, the last 10 % held out.
SAMPLES = 2000
VAL_SAMPLES = 200
TINY_SEARCH = dict(normalize=NORMALIZE, max_samples=SAMPLES, calib_size=256,
                   bits=[8, 6, 4, 2], target_avg_bits=4, finetune_steps=10,
                   seed=0)


class RealServerTest(unittest.TestCase):
    """One server and one finished job shared by the tests (the job is the
    slow part)."""

    server: MixqServer
    client: Client
    job: mixq_pb2.Job
    events: List[mixq_pb2.JobEvent]

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = MixqServer()
        cls.client = Client(cls.server.address)
        model = cls.client.upload(MODEL)
        submitted = cls.client.submit(
            model=f"sha256:{model.sha256.upper()}", inputs=IMAGES,
            labels=LABELS, name="py-client-test", **TINY_SEARCH)
        cls.events = list(cls.client.watch(submitted.id))
        cls.job = cls.client.job(submitted.id)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.server.stop()

    def test_the_job_ran_to_success_with_the_spec_as_given(self) -> None:
        self.assertEqual(self.job.state, mixq_client.SUCCEEDED, self.job.error)
        spec = self.job.spec
        self.assertEqual(spec.name, "py-client-test")
        self.assertEqual(spec.model.artifact_sha256, self.job.model_sha256)
        self.assertEqual(spec.inputs.filename, os.path.basename(IMAGES))
        self.assertEqual(list(spec.search.bits), [8, 6, 4, 2])
        self.assertEqual(spec.search.budget.avg_bits, 4)
        self.assertEqual(spec.search.finetune_steps, 10)
        self.assertAlmostEqual(spec.normalize.std, NORMALIZE[1])
        self.assertEqual(self.job.val_samples, VAL_SAMPLES)

    def test_watch_ends_with_the_terminal_event_and_repeats_none(self) -> None:
        self.assertGreater(len(self.events), 2)
        self.assertEqual(self.events[-1].state, mixq_client.SUCCEEDED)
        self.assertEqual(self.events[-1].phase, "done")
        self.assertTrue(all(e.state not in mixq_client.TERMINAL_STATES
                            for e in self.events[:-1]))
        serialized = [e.SerializeToString(deterministic=True)
                      for e in self.events]
        self.assertTrue(all(a != b for a, b in zip(serialized, serialized[1:])))
        # A watch of an ended job is its terminal event alone.
        again = list(self.client.watch(self.job.id))
        self.assertEqual([e.state for e in again], [mixq_client.SUCCEEDED])

    def test_best_pareto_and_results_describe_the_kept_policies(self) -> None:
        best = self.client.best(self.job.id)
        self.assertTrue(best)
        self.assertTrue(all(p.avg_bits <= 4 and p.policy_id for p in best))
        accuracies = [p.val_accuracy for p in best]
        self.assertEqual(accuracies, sorted(accuracies, reverse=True))
        self.assertEqual(self.client.best(self.job.id, top_k=1), best[:1])
        front = self.client.pareto(self.job.id)
        self.assertTrue(front.policies)
        self.assertEqual(front.fp32_val_accuracy, self.job.fp32_val_accuracy)
        same_model = self.client.pareto(model_sha256=self.job.model_sha256)
        self.assertEqual(same_model.model_sha256, self.job.model_sha256)
        results = self.client.results(self.job.id)
        self.assertEqual(results.final_policy, self.job.final_policy)
        self.assertTrue(results.steps)

    def test_the_export_runs_to_the_reported_val_accuracy(self) -> None:
        best = self.client.best(self.job.id, top_k=1)[0]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            exported = self.client.export(self.job.id, path,
                                          policy_id=best.policy_id)
            self.assertEqual(exported.size_bytes, os.path.getsize(path))
            self.assertTrue(exported.filename.endswith(".onnx"))
            # mixq-run gives exactly the job's figures on its held-out range.
            run = subprocess.run(
                [os.environ["MIXQ_RUN_BIN"], "--model", path, "--inputs",
                 IMAGES, "--labels", LABELS, "--normalize",
                 f"{NORMALIZE[0]},{NORMALIZE[1]}", "--samples",
                 f"{SAMPLES - VAL_SAMPLES}:{SAMPLES}"],
                capture_output=True, text=True, check=True)
            accuracy = float(re.search(r"accuracy (\S+)", run.stdout)[1])
            self.assertAlmostEqual(accuracy, best.val_accuracy, delta=1e-9)
            policy = self.client.export(self.job.id, os.path.join(tmp, "p.json"),
                                        format="policy-json")
            with open(policy.path) as f:
                self.assertIn(self.job.id, f.read())

    def test_evaluate_measures_one_policy_against_fp32(self) -> None:
        evaluation = self.client.evaluate(
            model=f"sha256:{self.job.model_sha256}", inputs=IMAGES,
            labels=LABELS, normalize=NORMALIZE, max_samples=600,
            calib_size=300, bits=4, layer_bits={"fc3.weight": 8})
        self.assertEqual(evaluation.eval_samples, 300)
        self.assertEqual(evaluation.mode, "static")
        self.assertEqual({l.name: l.bits for l in evaluation.layers},
                         {"fc1.weight": 4, "fc2.weight": 4, "fc3.weight": 8})
        self.assertGreater(evaluation.fp32_accuracy, 0.7)
        self.assertGreater(evaluation.accuracy, 0.5)
        with self.assertRaisesRegex(TypeError, "eval.*target_avg_bits"):
            self.client.evaluate(model=MODEL, target_avg_bits=4)

    def test_jobs_lists_the_job(self) -> None:
        self.assertIn(self.job.id, [j.id for j in self.client.jobs()])
        self.assertEqual(self.client.jobs(state=mixq_client.FAILED), [])

    def test_a_known_file_is_not_sent_again(self) -> None:
        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(os.urandom(3 * client_module._CHUNK_BYTES // 2))
            f.flush()
            reads = mock.Mock(side_effect=client_module.file_chunks)
            with mock.patch.object(client_module, "file_chunks", reads):
                first = self.client.upload(f.name)
                self.assertFalse(first.existing)
                self.assertEqual(reads.call_count, 2)  # hashed, then sent
                second = self.client.upload(f.name)
                self.assertEqual(reads.call_count, 3)  # hashed only
            self.assertTrue(second.existing)
            self.assertEqual(second.sha256, first.sha256)

    def test_errors_carry_the_grpc_code(self) -> None:
        cases = [
            (lambda: self.client.job("job-000000000000"),
             grpc.StatusCode.NOT_FOUND),
            (lambda: self.client.submit(model=MODEL, inputs=IMAGES,
                                        labels=LABELS, **{**TINY_SEARCH,
                                                          "bits": [9]}),
             grpc.StatusCode.INVALID_ARGUMENT),
            (lambda: self.client.submit(model="sha256:" + "0" * 64,
                                        inputs=IMAGES, labels=LABELS,
                                        **TINY_SEARCH),
             grpc.StatusCode.NOT_FOUND),
            (lambda: self.client.export(self.job.id, os.devnull + ".x",
                                        policy_id="step-99"),
             grpc.StatusCode.NOT_FOUND),
            (lambda: self.client.cancel(self.job.id),
             grpc.StatusCode.FAILED_PRECONDITION),
            (lambda: list(self.client.watch("job-000000000000")),
             grpc.StatusCode.NOT_FOUND),
        ]
        for call, code in cases:
            with self.subTest(code=code):
                with self.assertRaises(MixqError) as raised:
                    call()
                self.assertEqual(raised.exception.code, code)
                self.assertTrue(raised.exception.details)


class SpecKeywordTest(unittest.TestCase):
    """Keywords are checked before anything is sent."""

    def test_unknown_keywords_and_two_budgets_are_refused(self) -> None:
        client = Client("127.0.0.1:1")
        with self.assertRaisesRegex(TypeError, "modle"):
            client.submit(modle=MODEL)
        with self.assertRaisesRegex(ValueError,
                                    "target_avg_bits and target_size_bytes"):
            client.submit(bits=[4], target_avg_bits=4, target_size_bytes=1)

    def test_pins_keep_the_highest_bits(self) -> None:
        spec = mixq_client.spec.build_job_spec(
            lambda path: "", bits=[8, 4], layer_bits={"a": [6, 2]},
            pin=["a", "b"], lambda_=0.5)
        self.assertEqual({l.name: list(l.bits) for l in spec.search.layers},
                         {"a": [6], "b": [8]})
        self.assertEqual(getattr(spec.search, "lambda"), 0.5)


class SecureServerTest(unittest.TestCase):
    """TLS with the test CA and a bearer token."""

    def test_token_and_tls(self) -> None:
        tls_dir = os.path.join(FIXTURES, "tls")
        with tempfile.NamedTemporaryFile("w", suffix=".token") as token:
            token.write("s3cret\n")
            token.flush()
            server = MixqServer([
                "--auth-token-file", token.name,
                "--tls-cert", os.path.join(tls_dir, "server.pem"),
                "--tls-key", os.path.join(tls_dir, "server.key")])
        try:
            tls = TlsConfig(ca=os.path.join(tls_dir, "ca.pem"))
            with Client(server.address, token="s3cret", tls=tls) as client:
                self.assertEqual(client.jobs(), [])
            for token_sent in (None, "wrong"):
                with self.subTest(token=token_sent):
                    with Client(server.address, token=token_sent,
                                tls=tls) as client:
                        with self.assertRaises(MixqError) as raised:
                            client.jobs()
                        self.assertEqual(raised.exception.code,
                                         grpc.StatusCode.UNAUTHENTICATED)
        finally:
            server.stop()

    def test_mutual_tls(self) -> None:
        tls_dir = os.path.join(FIXTURES, "tls")
        server = MixqServer([
            "--tls-cert", os.path.join(tls_dir, "server.pem"),
            "--tls-key", os.path.join(tls_dir, "server.key"),
            "--tls-client-ca", os.path.join(tls_dir, "ca.pem")])
        try:
            ca = os.path.join(tls_dir, "ca.pem")
            mutual = TlsConfig(ca=ca, cert=os.path.join(tls_dir, "client.pem"),
                               key=os.path.join(tls_dir, "client.key"))
            with Client(server.address, tls=mutual) as client:
                self.assertEqual(client.jobs(), [])
            with Client(server.address, tls=TlsConfig(ca=ca)) as client:
                with self.assertRaises(MixqError) as raised:
                    client.jobs()
                self.assertEqual(raised.exception.code,
                                 grpc.StatusCode.UNAVAILABLE)
        finally:
            server.stop()


def _event(state: int, step: int) -> mixq_pb2.JobEvent:
    # NaN accuracies, as before validation: equal events must still match.
    return mixq_pb2.JobEvent(job_id="job-1", state=state, step=step,
                             phase=f"step-{step}", val_accuracy=float("nan"))


class FlakyWatchServicer(mixq_pb2_grpc.MixqServicer):
    """WatchJob plays `streams` in turn: each a list of events, then
    UNAVAILABLE unless it was the last; a call beyond them is
    PERMISSION_DENIED, so a client that never gives up fails fast."""

    def __init__(self, streams: List[List[mixq_pb2.JobEvent]]) -> None:
        self.streams = streams
        self.calls = 0

    def WatchJob(self, request, context):  # noqa: N802 (gRPC's name)
        if self.calls == len(self.streams):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "watched too often")
        stream = self.streams[self.calls]
        self.calls += 1
        yield from stream
        if self.calls < len(self.streams):
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


class DamagedExportServicer(mixq_pb2_grpc.MixqServicer):
    """ExportModel sends bytes that do not hash to the announced SHA-256."""

    def ExportModel(self, request, context):  # noqa: N802 (gRPC's name)
        yield mixq_pb2.ExportChunk(data=b"onnx", total_bytes=4,
                                   sha256="0" * 64, filename="x.onnx")


class FakeServerTest(unittest.TestCase):
    """What a real server does not do on demand: drop the watch stream,
    damage a download."""

    def serve(self, servicer: mixq_pb2_grpc.MixqServicer) -> str:
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
        mixq_pb2_grpc.add_MixqServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        return f"127.0.0.1:{port}"

    def test_resumes_after_unavailable_without_repeating_events(self) -> None:
        running = [_event(mixq_client.RUNNING, s) for s in range(3)]
        done = _event(mixq_client.SUCCEEDED, 3)
        # After each drop the server starts again from the current state.
        # Three drops, but never two in a row without a new event: within
        # two attempts.
        servicer = FlakyWatchServicer([running[:2], running[1:2], running[1:],
                                       running[2:] + [done]])
        fast = WatchRetry(attempts=2, initial=0.01)
        with Client(self.serve(servicer)) as client:
            events = list(client.watch("job-1", retry=fast))
        self.assertEqual([e.step for e in events], [0, 1, 2, 3])
        self.assertEqual(servicer.calls, 4)

    def test_gives_up_after_the_attempts(self) -> None:
        servicer = FlakyWatchServicer([[_event(mixq_client.RUNNING, 0)]] * 10)
        with Client(self.serve(servicer)) as client:
            with self.assertRaises(MixqError) as raised:
                list(client.watch("job-1", retry=WatchRetry(attempts=2,
                                                            initial=0.01)))
        self.assertEqual(raised.exception.code, grpc.StatusCode.UNAVAILABLE)
        # The first stream, then two reconnections that bring nothing new.
        self.assertEqual(servicer.calls, 3)


    def test_a_damaged_export_is_data_loss_and_leaves_no_file(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            with Client(self.serve(DamagedExportServicer())) as client:
                with self.assertRaises(MixqError) as raised:
                    client.export("job-1", path)
            self.assertEqual(raised.exception.code, grpc.StatusCode.DATA_LOSS)
            self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
