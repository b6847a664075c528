"""PathInfoService client for ``tvix.store.v1.PathInfoService`` over gRPC.

Every PathInfo received is validated (:meth:`PathInfo.from_proto`); whether
a Get answer is for the store path asked for is the one identity rule
(``pathinfo/lookup.py``) that every lookup goes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ... import nixbase32
from ..._proto import rpc_pathinfo_pb2 as pb
from ..._proto import rpc_pathinfo_pb2_grpc as pb_grpc
from ...castore.nodes import Node, node_to_proto
from ...errors import NotFoundError, ValidationError
from ...pathinfo.model import PathInfo
from ...storepath import DIGEST_LEN
from .transport import GrpcTransport


def _received(msg: Any, what: str) -> PathInfo:
    try:
        return PathInfo.from_proto(msg)
    except ValidationError as exc:
        raise ValidationError(f"{what}: the server sent an invalid PathInfo: {exc}") from None


class GrpcPathInfoService:
    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport
        self._stub = pb_grpc.PathInfoServiceStub(transport.channel)

    async def get(self, digest: bytes) -> PathInfo | None:
        if len(digest) != DIGEST_LEN:
            raise ValidationError(f"a store path digest is {DIGEST_LEN} bytes, got {len(digest)}")
        what = f"get path info {nixbase32.encode(digest)}"
        request = pb.GetPathInfoRequest(by_output_hash=digest)
        try:
            msg = await self._transport.call(
                what, lambda timeout: self._stub.Get(request, timeout=timeout)
            )
        except NotFoundError:
            return None
        return _received(msg, what)

    async def put(self, info: PathInfo) -> PathInfo:
        store_path = info.validate()
        msg = info.to_proto()
        what = f"put path info {store_path}"
        answer = await self._transport.call(
            what, lambda timeout: self._stub.Put(msg, timeout=timeout)
        )
        return _received(answer, what)

    async def list(self) -> AsyncIterator[PathInfo]:
        def fetch(timeout: float) -> list[Any]:
            return list(self._stub.List(pb.ListPathInfoRequest(), timeout=timeout))

        for msg in await self._transport.call("list path infos", fetch, stream=True):
            yield _received(msg, "list path infos")

    async def calculate_nar(self, node: Node) -> tuple[int, bytes]:
        """The NAR size and SHA-256 of ``node``'s tree, computed by the server."""
        msg = node_to_proto(node)
        what = f"calculate NAR of {node.name!r}"
        answer = await self._transport.call(
            what, lambda timeout: self._stub.CalculateNAR(msg, timeout=timeout), stream=True
        )
        if len(answer.nar_sha256) != 32:
            raise ValidationError(f"{what}: the server sent a {len(answer.nar_sha256)}-byte sha256")
        return answer.nar_size, bytes(answer.nar_sha256)

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel
