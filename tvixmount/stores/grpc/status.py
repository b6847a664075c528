"""The one mapping between gRPC status codes and tvixmount's errors, both directions.

The server (:mod:`.server`) answers a store error with :func:`status_of`; the
client (:mod:`.transport`) turns a status back with :func:`error_of`. Keeping
both tables here means a NOT_FOUND, a refused Put or corrupt data reads the
same on either side of the wire (a tvixmount client of a tvixmount server
gets back the error class the server raised).
"""

from __future__ import annotations

from typing import Any

import grpc

from ...errors import (
    DecodeError,
    DigestError,
    IntegrityError,
    NotFoundError,
    StoreError,
    StorePathError,
    TvixmountError,
    ValidationError,
)


class Unimplemented(TvixmountError):
    """A method this server cannot answer (UNIMPLEMENTED)."""


class PermissionDeniedError(StoreError):
    """A request the server refuses to carry out (a Put to a read-only ``serve``)."""


def status_of(exc: TvixmountError) -> tuple[Any, str]:
    """Server side: the status code and details a handler answers ``exc`` with."""
    if isinstance(exc, Unimplemented):
        code = grpc.StatusCode.UNIMPLEMENTED
    elif isinstance(exc, NotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, PermissionDeniedError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif isinstance(exc, ValidationError | DecodeError | DigestError | StorePathError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, IntegrityError):
        code = grpc.StatusCode.DATA_LOSS
    else:
        code = grpc.StatusCode.INTERNAL
    return code, str(exc)


def error_of(code: Any, details: str, what: str, where: str) -> TvixmountError:
    """Client side: the error a call named ``what`` to ``where`` failed with.

    UNAVAILABLE and DEADLINE_EXCEEDED are the transport's own (it retries them
    and words them with the attempts made), so they are not mapped here.
    """
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"{what}: not found in {where}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(f"{what}: {where} refused: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return ValidationError(f"{what}: {where} rejected the request: {details}")
    if code == grpc.StatusCode.DATA_LOSS:
        return IntegrityError(f"{what}: {where} reports corrupt data: {details}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented(f"{what}: {where} does not implement it: {details}")
    name = getattr(code, "name", str(code))
    return StoreError(f"{what}: {where} failed: {name}: {details}")


__all__ = ["PermissionDeniedError", "Unimplemented", "error_of", "status_of"]
