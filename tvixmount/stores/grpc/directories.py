"""DirectoryService client for ``tvix.castore.v1.DirectoryService`` over gRPC.

Nothing a server sends is trusted: every Directory is validated and its
digest recomputed, and a recursive Get must follow tvix's order (the root
first, then each Directory only after one that referred to it, and every
referred Directory eventually sent).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..._proto import castore_pb2
from ..._proto import rpc_directory_pb2 as pb
from ..._proto import rpc_directory_pb2_grpc as pb_grpc
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...errors import IntegrityError, NotFoundError, StoreError, ValidationError
from .transport import GrpcTransport

log = logging.getLogger(__name__)


def _received(msg: castore_pb2.Directory, what: str) -> Directory:
    try:
        return Directory.from_proto(msg)
    except ValidationError as exc:
        raise ValidationError(f"{what}: the server sent an invalid Directory: {exc}") from None


def check_recursive_order(root: B3Digest, messages: Sequence[Any]) -> list[Directory]:
    """Validate a recursive Get answer; returns the Directories in the order received."""
    what = f"recursive get of directory {root}"
    if not messages:
        raise NotFoundError(f"directory {root} not found")
    expected = {root}  # referred to, not yet received
    received: set[B3Digest] = set()
    result: list[Directory] = []
    for position, msg in enumerate(messages):
        directory = _received(msg, what)
        digest = directory.digest()
        if position == 0 and digest != root:
            raise IntegrityError(f"{what}: the first Directory sent has digest {digest}")
        if digest not in expected:
            raise ValidationError(
                f"{what}: Directory {digest} (#{position}) was sent "
                + (
                    "twice"
                    if digest in received
                    else "but no Directory received before it refers to that digest "
                    "(a child before its parent, or a tampered Directory)"
                )
            )
        expected.discard(digest)
        received.add(digest)
        for child in directory.directories:
            if child.digest not in received:
                expected.add(child.digest)
        result.append(directory)
    if expected:
        missing = ", ".join(str(d) for d in sorted(expected)[:3])
        raise StoreError(f"{what}: the server did not send referred Directories ({missing})")
    return result


class GrpcDirectoryService:
    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport
        self._stub = pb_grpc.DirectoryServiceStub(transport.channel)

    def _fetch(self, digest: B3Digest, recursive: bool) -> Any:
        request = pb.GetDirectoryRequest(digest=bytes(digest), recursive=recursive)

        def get(timeout: float) -> list[Any]:
            return list(self._stub.Get(request, timeout=timeout))

        return self._transport.call(f"get directory {digest}", get, stream=recursive)

    async def get(self, digest: B3Digest) -> Directory | None:
        try:
            messages = await self._fetch(digest, recursive=False)
        except NotFoundError:
            return None
        what = f"get directory {digest}"
        if not messages:
            return None
        if len(messages) != 1:
            raise ValidationError(f"{what}: the server sent {len(messages)} Directories, not one")
        directory = _received(messages[0], what)
        if directory.digest() != digest:
            err = IntegrityError(
                f"{what}: the server sent a Directory whose digest is {directory.digest()}"
            )
            log.warning("%s", err)
            raise err
        return directory

    async def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]:
        try:
            messages = await self._fetch(root, recursive=True)
        except NotFoundError:
            raise NotFoundError(f"directory {root} not found") from None
        try:
            directories = check_recursive_order(root, messages)
        except (IntegrityError, ValidationError) as exc:
            log.warning("%s", exc)
            raise
        for directory in directories:
            yield directory

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        if not directories:
            raise ValidationError("no directories to put")
        for directory in directories:
            directory.validate()
        root = directories[-1].digest()
        messages = [d.to_proto() for d in directories]

        def put(timeout: float) -> bytes:
            return bytes(self._stub.Put(iter(messages), timeout=timeout).root_digest)

        answered = await self._transport.call(f"put directories (root {root})", put, stream=True)
        if answered != root:
            raise IntegrityError(
                f"put directories: the server answered root {answered.hex()}, expected {root}"
            )
        return root

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel
