"""A real mixq-server for the Python tests (client package, pipeline gate).

Started on 127.0.0.1:0 with a fresh data directory; the port comes from
--port-file, polled with a deadline. The binary is $MIXQ_SERVER_BIN (set by
ctest).
"""

import ctypes
import os
import signal
import subprocess
import tempfile
import time
from typing import List, Optional

START_DEADLINE_SECONDS = 30.0
# prctl(2): the child gets a signal when its parent dies.
_PR_SET_PDEATHSIG = 1
STOP_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.05


class MixqServer:
    """One mixq-server process; stop() ends it. Not thread-safe."""

    def __init__(self, extra_args: Optional[List[str]] = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mixq-py-")
        self.data_dir = self._dir.name
        port_file = os.path.join(self.data_dir, "port")
        self.log_path = os.path.join(self.data_dir, "server.log")
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [os.environ["MIXQ_SERVER_BIN"], "--listen", "127.0.0.1:0",
                 "--data-dir", os.path.join(self.data_dir, "store"),
                 "--port-file", port_file, *(extra_args or [])],
                stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_end_with_parent)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while not _nonempty(port_file):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mixq-server did not start: {self.log()}")
            time.sleep(POLL_SECONDS)
        with open(port_file) as f:
            self.address = f"127.0.0.1:{f.read().strip()}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()


def _end_with_parent() -> None:
    """In the child: a test that dies without stop() (a crash in gRPC's C
    core) takes its server with it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG,
                                                   signal.SIGTERM)


def _nonempty(path: str) -> bool:
    return os.path.exists(path) and os.path.getsize(path) > 0
