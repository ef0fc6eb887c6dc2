"""Builds mixq_client with its gRPC stubs generated from proto/mixq.proto.

The stubs are not committed: `build_py` runs protoc with grpc_python_plugin
(Debian: protobuf-compiler, protobuf-compiler-grpc) on the repository's
proto/mixq.proto, or on $MIXQ_PROTO, so the package always matches the server
it was built beside. Metadata lives in pyproject.toml.
"""

import os
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "..", "proto", "mixq.proto")
# The stubs' package: protoc names imports after the proto's path below its
# include root, so the proto is staged at this path to make the generated
# code import `mixq_client._proto.mixq_pb2` instead of a top-level module.
STUB_PACKAGE_DIR = os.path.join("mixq_client", "_proto")


def _tool(env_var: str, name: str, package: str) -> str:
    path = os.environ.get(env_var) or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise SystemExit(
            f"mixq-client: {name} not found (install Debian's {package}, or "
            f"set ${env_var}); it generates the gRPC stubs from mixq.proto")
    return path


class BuildPyWithStubs(build_py):
    """build_py, then protoc writes mixq_pb2.py and mixq_pb2_grpc.py."""

    def run(self) -> None:
        super().run()
        proto = os.path.abspath(os.environ.get("MIXQ_PROTO", DEFAULT_PROTO))
        if not os.path.isfile(proto):
            raise SystemExit(
                f"mixq-client: {proto} not found: build from a mixq checkout "
                "(clients/python) or set $MIXQ_PROTO to proto/mixq.proto")
        protoc = _tool("PROTOC", "protoc", "protobuf-compiler")
        plugin = _tool("GRPC_PYTHON_PLUGIN", "grpc_python_plugin",
                       "protobuf-compiler-grpc")
        out_dir = os.path.join(self.build_lib, STUB_PACKAGE_DIR)
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryDirectory() as stage:
            staged = os.path.join(stage, STUB_PACKAGE_DIR, "mixq.proto")
            os.makedirs(os.path.dirname(staged))
            shutil.copyfile(proto, staged)
            subprocess.run(
                [protoc, f"--plugin=protoc-gen-grpc_python={plugin}",
                 f"-I{stage}", f"--python_out={self.build_lib}",
                 f"--grpc_python_out={self.build_lib}",
                 os.path.relpath(staged, stage)],
                check=True)


setup(cmdclass={"build_py": BuildPyWithStubs})
