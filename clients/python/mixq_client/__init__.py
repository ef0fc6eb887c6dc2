"""Python client of mixq, the mixed-precision quantization search service.

    from mixq_client import Client
    with Client("127.0.0.1:50051") as mixq:
        job = mixq.submit(model="mlp.onnx", inputs="x.npy", labels="y.npy",
                          calib_size=512, bits=[8, 6, 4, 2], target_avg_bits=4)
        for event in mixq.watch(job.id):
            print(event.phase, event.step, event.val_accuracy)
        best = mixq.best(job.id)[0]
        mixq.export(job.id, "model.onnx", policy_id=best.policy_id)

Answers are the protobuf messages of proto/mixq.proto (re-exported here);
errors are MixqError with the gRPC status code.
"""

from mixq_client._proto.mixq_pb2 import (CANCELLED, FAILED, QUEUED, RUNNING,
                                         SUCCEEDED, Artifact, Job, JobEvent,
                                         JobState, Policy)
from mixq_client.client import (TERMINAL_STATES, Client, ExportedFile,
                                TlsConfig, WatchRetry)
from mixq_client.errors import MixqError

__all__ = [
    "Client", "TlsConfig", "WatchRetry", "ExportedFile", "MixqError",
    "Artifact", "Job", "JobEvent", "JobState", "Policy", "TERMINAL_STATES",
    "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED",
]
