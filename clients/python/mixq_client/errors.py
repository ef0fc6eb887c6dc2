"""The one exception type of mixq_client."""

from typing import Optional

import grpc


class MixqError(Exception):
    """A failed call: `code` is the grpc.StatusCode, `details` the message.

    The codes are the API's (proto/mixq.proto): INVALID_ARGUMENT names the
    field, NOT_FOUND an unknown job, policy or artifact, UNAVAILABLE an
    unreachable server, UNAUTHENTICATED a missing or wrong token, DATA_LOSS a
    damaged upload or download. Decide on `code`, never on the text.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "MixqError":
        code: Optional[grpc.StatusCode] = error.code()  # type: ignore[attr-defined]
        details: Optional[str] = error.details()  # type: ignore[attr-defined]
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
