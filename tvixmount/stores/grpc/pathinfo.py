"""PathInfoService client for ``tvix.store.v1.PathInfoService`` over gRPC.

Every PathInfo received is validated (:meth:`PathInfo.from_proto`); whether
a Get answer is for the store path asked for is the one identity rule
(``pathinfo/lookup.py``) that every lookup goes through.

Given trusted public keys, a PathInfo is served only with a valid signature
by one of them among those it carries (``narinfo.signatures``), as Nix
requires of a substituter: the server may be anyone's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ... import nixbase32
from ..._proto import rpc_pathinfo_pb2 as pb
from ..._proto import rpc_pathinfo_pb2_grpc as pb_grpc
from ...castore.nodes import FileNode, Node, node_to_proto
from ...errors import IntegrityError, NotFoundError, ValidationError
from ...nar.signing import PublicKey, pathinfo_signers
from ...pathinfo.model import PathInfo
from ...storepath import DIGEST_LEN
from .hints import BlobHints
from .transport import GrpcTransport, Ticket

MAX_LISTED = 1 << 20  # PathInfos one List reply may hold


def _received(msg: Any, what: str) -> PathInfo:
    try:
        return PathInfo.from_proto(msg)
    except ValidationError as exc:
        raise ValidationError(f"{what}: the server sent an invalid PathInfo: {exc}") from None


def _list(stub: Any, ticket: Ticket) -> list[Any]:
    call = ticket.track(stub.List(pb.ListPathInfoRequest(), timeout=ticket.timeout))
    messages: list[Any] = []
    for msg in call:
        if len(messages) == MAX_LISTED:
            call.cancel()
            raise ValidationError(f"list path infos: the server sent more than {MAX_LISTED}")
        messages.append(msg)
    return messages


class GrpcPathInfoService:
    def __init__(
        self,
        transport: GrpcTransport,
        keys: tuple[PublicKey, ...] = (),
        hints: BlobHints | None = None,
    ) -> None:
        self._transport = transport
        self._stub = pb_grpc.PathInfoServiceStub(transport.channel)
        self._keys = keys
        self._hints = hints if hints is not None else BlobHints()

    def warm_up(self) -> None:
        """Ask, without waiting, for a store path no one has.

        A server's first call costs it more than later ones (a handler thread
        to start, code paths to load): a few milliseconds that would otherwise
        delay a mount's first lookup. Its answer (NOT_FOUND) is not looked at.
        """
        request = pb.GetPathInfoRequest(by_output_hash=bytes(DIGEST_LEN))
        self._stub.Get.future(request, timeout=self._transport.policy.timeout)

    def _trusted(self, info: PathInfo, what: str) -> PathInfo:
        if self._keys and not pathinfo_signers(info, self._keys):
            raise IntegrityError(
                f"{what}: {info.store_path} has no valid signature by a trusted key"
            )
        if isinstance(info.node, FileNode):
            self._hints.note_file(info.node)
        return info

    async def get(self, digest: bytes) -> PathInfo | None:
        if len(digest) != DIGEST_LEN:
            raise ValidationError(f"a store path digest is {DIGEST_LEN} bytes, got {len(digest)}")
        what = f"get path info {nixbase32.encode(digest)}"
        request = pb.GetPathInfoRequest(by_output_hash=digest)
        try:
            msg = await self._transport.call(
                what,
                lambda ticket: ticket.unary(self._stub.Get, request),
            )
        except NotFoundError:
            return None
        return self._trusted(_received(msg, what), what)

    async def put(self, info: PathInfo) -> PathInfo:
        store_path = info.validate()
        msg = info.to_proto()
        what = f"put path info {store_path}"
        answer = await self._transport.call(
            what,
            lambda ticket: ticket.unary(self._stub.Put, msg),
        )
        return _received(answer, what)

    async def list(self) -> AsyncIterator[PathInfo]:
        what = "list path infos"
        for msg in await self._transport.call(what, lambda t: _list(self._stub, t), stream=True):
            info = _received(msg, what)
            if self._keys and not pathinfo_signers(info, self._keys):
                continue  # not served: as if the server did not have it
            yield info

    async def calculate_nar(self, node: Node) -> tuple[int, bytes]:
        """The NAR size and SHA-256 of ``node``'s tree, computed by the server."""
        msg = node_to_proto(node)
        what = f"calculate NAR of {node.name!r}"
        answer = await self._transport.call(
            what,
            lambda ticket: ticket.unary(self._stub.CalculateNAR, msg),
            stream=True,
        )
        if len(answer.nar_sha256) != 32:
            raise ValidationError(f"{what}: the server sent a {len(answer.nar_sha256)}-byte sha256")
        return answer.nar_size, bytes(answer.nar_sha256)

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel
