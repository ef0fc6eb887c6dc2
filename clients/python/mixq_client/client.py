"""Client: the mixq API (proto/mixq.proto) as Python calls.

Answers are the generated protobuf messages (mixq_client.Job, JobEvent,
Policy, ...: the fields documented in proto/mixq.proto), except export(),
which returns an ExportedFile. Every failed call raises MixqError carrying
the gRPC status code.
"""

import dataclasses
import hashlib
import os
import tempfile
import threading
import time
from typing import (Any, Callable, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, TypeVar, Union)

import grpc

from mixq_client import spec as spec_lib
from mixq_client._proto import mixq_pb2, mixq_pb2_grpc
from mixq_client.errors import MixqError

# UploadArtifact: chunk size, the initial metadata key that says whether the
# server has the file already, and the slowest transfer rate the deadline
# allows for (as `mixq upload`).
_CHUNK_BYTES = 1 << 20
_EXISTING_KEY = "mixq-artifact-existing"
_MIN_TRANSFER_BYTES_PER_SECOND = 1 << 20
# The largest message sent or accepted (as the CLI's kMaxMessageBytes).
_MAX_MESSAGE_BYTES = 512 << 20
TERMINAL_STATES = frozenset(
    (mixq_pb2.SUCCEEDED, mixq_pb2.FAILED, mixq_pb2.CANCELLED))

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS settings: `ca` (PEM file trusted for the server; None: the
    system's roots), and for mutual TLS the client's `cert` and `key`."""
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ExportedFile:
    """A downloaded export: where it was written, its size and SHA-256
    (checked against the server's), and the file name the server suggests."""
    path: str
    size_bytes: int
    sha256: str
    filename: str


@dataclasses.dataclass(frozen=True)
class WatchRetry:
    """How watch() reconnects after UNAVAILABLE or a dropped stream: at most
    `attempts` reconnections in a row without a new event, waiting `initial`
    seconds, doubled each time up to `longest`."""
    attempts: int = 8
    initial: float = 0.25
    longest: float = 8.0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _digest(path: str) -> Tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in file_chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_chunks(path: str) -> Iterator[bytes]:
    """The file's bytes in upload-sized chunks, read as they go."""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            yield chunk


class Client:
    """A connection to one mixq server.

    Thread-safe (one gRPC channel; calls may run concurrently). Unary calls
    block for at most `timeout` seconds; uploads for `timeout` plus a second
    per MiB; watch() has no deadline. Use as a context manager, or call
    close().
    """

    def __init__(self, server: str, token: Optional[str] = None,
                 tls: Union[bool, TlsConfig] = False,
                 timeout: float = 60.0) -> None:
        """`server` is host:port; `token` is sent as `authorization: Bearer
        <token>` (the server's --auth-token-file); `tls` True trusts the
        system's root certificates, a TlsConfig its files. Raises OSError
        for an unreadable TLS file. Does not connect yet."""
        options = [("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
        if tls:
            config = tls if isinstance(tls, TlsConfig) else TlsConfig()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(config.ca) if config.ca else None,
                private_key=_read(config.key) if config.key else None,
                certificate_chain=_read(config.cert) if config.cert else None)
            self._channel = grpc.secure_channel(server, credentials, options)
        else:
            self._channel = grpc.insecure_channel(server, options)
        self._stub = mixq_pb2_grpc.MixqStub(self._channel)
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token.strip()}"),) if token else ())
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self._timeout,
                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise MixqError.from_rpc_error(error) from None

    def upload(self, path: Union[str, "os.PathLike[str]"]) -> mixq_pb2.Artifact:
        """Stores the file on the server (once per SHA-256) and returns its
        Artifact; `existing` is True when the server had it, and then no
        byte of it was sent. Name it in a job as "sha256:" + sha256. Reads
        the file twice (hash, then send); OSError if it cannot."""
        path = os.fspath(path)
        sha256, size = _digest(path)
        info = mixq_pb2.ArtifactInfo(sha256=sha256, size_bytes=size,
                                     filename=os.path.basename(path))
        # The request stream waits, after `info`, for the server's initial
        # metadata, which says whether to send the chunks.
        decided = threading.Event()
        send_chunks = False

        def requests() -> Iterator[mixq_pb2.UploadArtifactRequest]:
            yield mixq_pb2.UploadArtifactRequest(info=info)
            decided.wait()
            if send_chunks:
                for chunk in file_chunks(path):
                    yield mixq_pb2.UploadArtifactRequest(chunk=chunk)

        call = self._stub.UploadArtifact.future(
            requests(), metadata=self._metadata,
            timeout=self._timeout + size / _MIN_TRANSFER_BYTES_PER_SECOND)
        try:
            # Without the key (the server refused the upload) result() says why.
            metadata = dict(call.initial_metadata() or ())
            send_chunks = metadata.get(_EXISTING_KEY) == "false"
        finally:
            decided.set()
        try:
            return call.result()
        except grpc.RpcError as error:
            raise MixqError.from_rpc_error(error) from None

    def submit(self, *, request_id: Optional[str] = None,
               **spec: Any) -> mixq_pb2.Job:
        """Submits a search job and returns it (state QUEUED, or the first
        job of a repeated request_id). Keywords are `mixq submit`'s flags in
        snake_case: model=, inputs=, labels=, val_inputs=, val_labels= (paths,
        uploaded first unless the server has them, or "sha256:HEX"),
        normalize=(mean, std), calib_size=, max_samples=, val_size=,
        objective=, from_job=, name=, bits=[8, 6, 4, 2], one budget
        (target_avg_bits=, target_size_fraction=, target_size_bytes=,
        target_bops=), layer_bits={"fc1.weight": [8, 4]}, pin=["fc3.weight"],
        pin_first_last=, activation_bits=, activation_levels=, candidates=,
        max_layers=, finetune_steps=, warmup_steps=, final_steps=, lr=,
        batch_size=, lambda_=, strategy=, selection=, refresh_fisher=,
        land_on_budget=, knapsack_guided=, total_finetune_steps=,
        hutchinson_samples=, seed=. TypeError for an unknown keyword,
        ValueError for two budgets, MixqError(INVALID_ARGUMENT) for what the
        server refuses."""
        job_spec = spec_lib.build_job_spec(
            lambda path: self.upload(path).sha256, **spec)
        request = mixq_pb2.SubmitJobRequest(spec=job_spec,
                                            request_id=request_id or "")
        return self._call(self._stub.SubmitJob, request).job

    def evaluate(self, *, bits: int = 32,
                 layer_bits: Optional[Mapping[str, int]] = None,
                 mode: str = "static", activation_bits: Optional[int] = None,
                 finetune_steps: int = 0, seed: int = 0,
                 **data: Any) -> mixq_pb2.EvaluatePolicyResponse:
        """One policy against FP32 on the same samples, without a search
        (`mixq eval`): every layer at `bits` (32 = float) but those in
        layer_bits, in `mode` "static", "dynamic" or "qat" (finetune_steps
        of QAT first). `data` are submit()'s model and data keywords (model,
        inputs, labels, normalize, max_samples, calib_size, val_inputs,
        val_labels, val_size, objective). Synchronous: bound the work with
        max_samples. Errors as submit()."""
        job_spec = spec_lib.build_job_spec(
            lambda path: self.upload(path).sha256, spec_lib.DATA_KEYWORDS,
            "eval", **data)
        request = mixq_pb2.EvaluatePolicyRequest(
            spec=job_spec, default_bits=bits, mode=mode,
            finetune_steps=finetune_steps, seed=seed,
            layers=[mixq_pb2.LayerBits(name=name, bits=b)
                    for name, b in (layer_bits or {}).items()])
        if activation_bits is not None:
            request.activation_bits = activation_bits
        return self._call(self._stub.EvaluatePolicy, request)

    def job(self, job_id: str) -> mixq_pb2.Job:
        """The job now (GetJob)."""
        return self._call(self._stub.GetJob,
                          mixq_pb2.GetJobRequest(job_id=job_id))

    def jobs(self, state: int = mixq_pb2.JOB_STATE_UNSPECIFIED,
             limit: int = 100) -> List[mixq_pb2.Job]:
        """Up to `limit` jobs, newest first, optionally in one state
        (mixq_client.RUNNING, ...), following the server's pages."""
        jobs: List[mixq_pb2.Job] = []
        request = mixq_pb2.ListJobsRequest(state=state, limit=limit)
        while True:
            page = self._call(self._stub.ListJobs, request)
            jobs.extend(page.jobs[:limit - len(jobs)])
            if not page.next_page_token or len(jobs) >= limit:
                return jobs
            request.page_token = page.next_page_token
            request.limit = limit - len(jobs)

    def watch(self, job_id: str,
              retry: WatchRetry = WatchRetry()) -> Iterator[mixq_pb2.JobEvent]:
        """The job's events, its current state first, until (and including)
        its terminal state (SUCCEEDED, FAILED or CANCELLED). Reconnects after
        UNAVAILABLE or a stream that ends early, as `retry` says; the server
        then sends the current state again, which is skipped when it repeats
        the last event (events while disconnected are not replayed). Raises
        MixqError for other errors, or when the retries run out."""
        request = mixq_pb2.WatchJobRequest(job_id=job_id)
        # Events compare by their bytes: NaN fields (unmeasured accuracies)
        # make equal messages unequal.
        last = b""
        failures = 0
        while True:
            stream = self._stub.WatchJob(request, metadata=self._metadata)
            try:
                for event in stream:
                    serialized = event.SerializeToString(deterministic=True)
                    if serialized != last:
                        last = serialized
                        failures = 0
                        yield event
                    if event.state in TERMINAL_STATES:
                        return
                error = MixqError(grpc.StatusCode.UNAVAILABLE,
                                  f"the event stream of job {job_id} ended "
                                  "before the job finished")
            except grpc.RpcError as rpc_error:
                error = MixqError.from_rpc_error(rpc_error)
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise error from None
            finally:
                stream.cancel()
            if failures >= retry.attempts:
                raise error
            time.sleep(min(retry.initial * 2**failures, retry.longest))
            failures += 1

    def wait(self, job_id: str, retry: WatchRetry = WatchRetry()) -> mixq_pb2.Job:
        """Blocks until the job ends (watch()) and returns it."""
        for _ in self.watch(job_id, retry):
            pass
        return self.job(job_id)

    def results(self, job_id: str) -> mixq_pb2.GetResultsResponse:
        """Every recorded step with its ranked candidates, and the final
        policy."""
        return self._call(self._stub.GetResults,
                          mixq_pb2.GetResultsRequest(job_id=job_id))

    def best(self, job_id: Optional[str] = None, *, top_k: int = 0,
             max_avg_bits: float = 0, max_size_bytes: float = 0,
             max_bops: float = 0, same_model: bool = False,
             model_sha256: Optional[str] = None,
             resolve: bool = False) -> List[mixq_pb2.Policy]:
        """The best exportable policies, best first (validation accuracy
        descending), each with its policy_id. No limit: the job's own
        budget. same_model / model_sha256: every job on the model. resolve:
        the one policy the limit predicts (kind "predicted"). 0 = default."""
        request = mixq_pb2.QueryBestPoliciesRequest(
            job_id=job_id or "", top_k=top_k, max_avg_bits=max_avg_bits,
            max_size_bytes=max_size_bytes, max_bops=max_bops,
            same_model=same_model or bool(model_sha256),
            model_sha256=(model_sha256 or "").lower(), resolve=resolve)
        return list(self._call(self._stub.QueryBestPolicies, request).policies)

    def pareto(self, job_id: Optional[str] = None, *, same_model: bool = False,
               model_sha256: Optional[str] = None
               ) -> mixq_pb2.GetParetoFrontResponse:
        """The accuracy-vs-cost front (policies by size) and the FP32
        point."""
        request = mixq_pb2.GetParetoFrontRequest(
            job_id=job_id or "", same_model=same_model or bool(model_sha256),
            model_sha256=(model_sha256 or "").lower())
        return self._call(self._stub.GetParetoFront, request)

    def cancel(self, job_id: str) -> mixq_pb2.Job:
        """Cancels a queued or running job (FAILED_PRECONDITION if ended)."""
        return self._call(self._stub.CancelJob,
                          mixq_pb2.CancelJobRequest(job_id=job_id))

    def export(self, job_id: str, path: Union[str, "os.PathLike[str]"],
               policy_id: Optional[str] = None,
               format: str = "onnx") -> ExportedFile:
        """Downloads a kept policy (default: the final one) as QDQ ONNX
        (format "onnx") or its PolicyDocument JSON ("policy_json") to
        `path`, written whole or not at all once its size and SHA-256 match
        the server's (else MixqError DATA_LOSS). FAILED_PRECONDITION for a
        job that has not succeeded, NOT_FOUND for an unknown policy_id."""
        path = os.fspath(path)
        request = mixq_pb2.ExportModelRequest(
            job_id=job_id, policy_id=policy_id or "",
            format=format.replace("-", "_"))
        directory = os.path.dirname(os.path.abspath(path))
        digest = hashlib.sha256()
        size = 0
        first: Optional[mixq_pb2.ExportChunk] = None
        # Written beside `path` and renamed: a damaged or failed download
        # leaves nothing behind.
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as part:
            try:
                try:
                    for chunk in self._stub.ExportModel(
                            request, timeout=self._timeout,
                            metadata=self._metadata):
                        if first is None:
                            first = chunk
                        part.write(chunk.data)
                        digest.update(chunk.data)
                        size += len(chunk.data)
                except grpc.RpcError as error:
                    raise MixqError.from_rpc_error(error) from None
                part.close()
                sha256 = digest.hexdigest()
                if (first is None or size != first.total_bytes or
                        sha256 != first.sha256):
                    expected = (f"{first.total_bytes} bytes hashing to "
                                f"{first.sha256}" if first else "a first chunk")
                    raise MixqError(
                        grpc.StatusCode.DATA_LOSS,
                        f"the export of job {job_id} arrived damaged: {size} "
                        f"bytes hashing to {sha256}, expected {expected}")
                os.replace(part.name, path)
            finally:
                if os.path.exists(part.name):
                    os.unlink(part.name)
        return ExportedFile(path=path, size_bytes=size, sha256=sha256,
                            filename=first.filename)


__all__: Sequence[str] = ("Client", "ExportedFile", "TlsConfig", "WatchRetry",
                          "TERMINAL_STATES")
