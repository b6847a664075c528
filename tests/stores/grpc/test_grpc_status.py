"""One gRPC status mapping for both directions: what a server raises, a client raises again."""

from __future__ import annotations

import grpc
import pytest

from tvixmount.errors import (
    DecodeError,
    DigestError,
    IntegrityError,
    NotFoundError,
    StoreError,
    StorePathError,
    TvixmountError,
    ValidationError,
)
from tvixmount.stores.grpc.status import PermissionDeniedError, Unimplemented, error_of, status_of


@pytest.mark.parametrize(
    ("raised", "status", "received"),
    [
        (NotFoundError("gone"), grpc.StatusCode.NOT_FOUND, NotFoundError),
        (
            PermissionDeniedError("read-only"),
            grpc.StatusCode.PERMISSION_DENIED,
            PermissionDeniedError,
        ),
        (ValidationError("bad"), grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
        (DecodeError("bad bytes"), grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
        (DigestError("short"), grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
        (StorePathError("bad path"), grpc.StatusCode.INVALID_ARGUMENT, ValidationError),
        (IntegrityError("corrupt"), grpc.StatusCode.DATA_LOSS, IntegrityError),
        (Unimplemented("no NARs"), grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
        (StoreError("disk on fire"), grpc.StatusCode.INTERNAL, StoreError),
    ],
)
def test_an_error_survives_the_round_trip_through_its_status(
    raised: TvixmountError, status: grpc.StatusCode, received: type[TvixmountError]
) -> None:
    code, details = status_of(raised)
    assert code == status
    back = error_of(code, details, "put blob", "gRPC store grpc+http://127.0.0.1:1")
    assert type(back) is received
    if status != grpc.StatusCode.NOT_FOUND:
        assert str(raised) in str(back)
    assert str(back).startswith("put blob: ")


def test_a_status_only_other_servers_send_is_a_store_error_naming_it() -> None:
    back = error_of(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", "read blob", "gRPC store X")
    assert type(back) is StoreError
    assert str(back) == "read blob: gRPC store X failed: RESOURCE_EXHAUSTED: quota"
