"""A streaming, strict NAR parser.

:func:`read_nar` pulls byte chunks from an async iterator and reports the
archive to a :class:`NarVisitor` bottom-up: each file (with its contents as
a stream), each symlink, and each directory once all its entries are done.
It accepts exactly the canonical NARs ``nix-store --dump`` produces and
raises :class:`~tvixmount.errors.NarError` for anything else: bad magic,
unknown or misplaced tokens, non-zero padding, strings over their limit,
invalid, unsorted or duplicate entry names, a directory of more than
:data:`MAX_DIRECTORY_ENTRIES` entries, a truncated stream, or bytes after
the archive.

Memory stays bounded: file contents are handed on as they arrive, the only
buffer is one input chunk, and directories are tracked with an explicit
stack rather than recursion.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ..castore.nodes import MAX_NAME_LEN, MAX_TARGET_LEN
from ..errors import NarError
from . import wire

N = TypeVar("N")

_MAX_TOKEN_LEN = 64
_ENCODED_TOKENS = {
    token: wire.string(token)
    for token in (b"(", b")", b"type", b"entry", b"name", b"node", b"target", b"")
}
# Entries of one directory: each costs the visitor about 1 KB until the directory
# closes, and a NAR of a million empty files is 91 KB of xz. Nix sets no limit; real
# store paths stay far below this one (the biggest directories seen hold tens of
# thousands of entries).
MAX_DIRECTORY_ENTRIES = 100_000
# File contents are handed to the visitor in pieces of at most this size.
CONTENTS_CHUNK = 1 << 20


class NarVisitor(Protocol[N]):
    """Receives the archive's nodes bottom-up; returns what the caller builds."""

    async def regular(
        self, name: bytes, executable: bool, size: int, contents: AsyncIterator[bytes]
    ) -> N:
        """A file; ``contents`` yields exactly ``size`` bytes and should be consumed."""
        ...

    async def symlink(self, name: bytes, target: bytes) -> N: ...

    async def directory(self, name: bytes, children: list[N]) -> N:
        """A directory whose children (sorted by name) were all reported before it."""
        ...


class _Source:
    """Exact reads over a stream of chunks, keeping the current offset for messages."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks.__aiter__()
        self._buf = b""
        self._pos = 0
        self.offset = 0

    async def _fill(self) -> bool:
        """Load the next non-empty chunk; False at the end of the stream."""
        async for chunk in self._chunks:
            if chunk:
                self._buf = bytes(chunk)
                self._pos = 0
                return True
        self._buf = b""
        self._pos = 0
        return False

    async def read_exact(self, count: int) -> bytes:
        pos = self._pos
        end = pos + count
        if end <= len(self._buf):
            # The common case (tokens, names, small files): one slice, no await.
            self._pos = end
            self.offset += count
            return self._buf[pos:end]
        start = self.offset
        parts: list[bytes] = []
        need = count
        while need:
            if self._pos == len(self._buf) and not await self._fill():
                raise NarError(
                    f"truncated NAR: stream ends at byte {self.offset}, "
                    f"inside a {count}-byte field starting at byte {start}"
                )
            take = min(need, len(self._buf) - self._pos)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            self.offset += take
            need -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_some(self, limit: int) -> bytes:
        """Between 1 and ``limit`` bytes; raises at the end of the stream."""
        if self._pos == len(self._buf) and not await self._fill():
            raise NarError(f"truncated NAR: stream ends at byte {self.offset}, inside a file")
        if self._pos == 0 and len(self._buf) <= limit:
            data = self._buf  # hand on whole input chunks without copying
        else:
            data = self._buf[self._pos : self._pos + limit]
        self._pos += len(data)
        self.offset += len(data)
        return data

    async def peek(self, count: int) -> bytes:
        """Up to ``count`` bytes ahead, without consuming them (fewer at the stream's end)."""
        while len(self._buf) - self._pos < count:
            rest = self._buf[self._pos :]
            async for chunk in self._chunks:
                if chunk:
                    self._buf = rest + bytes(chunk)
                    self._pos = 0
                    break
            else:
                return self._buf[self._pos :]
        return self._buf[self._pos : self._pos + count]

    async def at_end(self) -> bool:
        return self._pos == len(self._buf) and not await self._fill()


class _Contents:
    """A file's bytes as an async iterator that tracks how much is left."""

    def __init__(self, source: _Source, size: int) -> None:
        self._source = source
        self.remaining = size

    def __aiter__(self) -> _Contents:
        return self

    async def __anext__(self) -> bytes:
        if not self.remaining:
            raise StopAsyncIteration
        data = await self._source.read_some(min(self.remaining, CONTENTS_CHUNK))
        self.remaining -= len(data)
        return data


@dataclass
class _Dir(Generic[N]):
    name: bytes
    children: list[N] = field(default_factory=list)
    last: bytes | None = None


class _Parser(Generic[N]):
    def __init__(self, chunks: AsyncIterable[bytes], visitor: NarVisitor[N]) -> None:
        self._src = _Source(chunks)
        self._visitor = visitor

    async def _u64(self) -> int:
        return wire.parse_u64(await self._src.read_exact(8))

    async def _padding(self, length: int) -> None:
        pad = wire.padding(length)
        if pad:
            start = self._src.offset
            if await self._src.read_exact(pad) != wire.zeros(pad):
                raise NarError(f"non-zero padding at byte {start}")

    async def _string(self, limit: int, what: str) -> bytes:
        start = self._src.offset
        length = await self._u64()
        if length > limit:
            raise NarError(
                f"{what} at byte {start} is {length} bytes long, more than the {limit} allowed"
            )
        data = await self._src.read_exact(length)
        await self._padding(length)
        return data

    async def _token(self) -> tuple[int, bytes]:
        start = self._src.offset
        return start, await self._string(_MAX_TOKEN_LEN, "token")

    async def _expect(self, token: bytes) -> None:
        # One read of the token's whole encoding; only a mismatch is parsed to say what it is.
        encoded = _ENCODED_TOKENS.get(token) or wire.string(token)
        got = await self._src.peek(len(encoded))
        if got == encoded:
            await self._src.read_exact(len(encoded))
            return
        start, found = await self._token()
        raise NarError(f"expected {token.decode()!r} at byte {start}, got {found!r}")

    async def _entry_name(self, parent: _Dir[N]) -> bytes:
        start = self._src.offset
        if len(parent.children) >= MAX_DIRECTORY_ENTRIES:
            raise NarError(
                f"directory {parent.name!r} has more than {MAX_DIRECTORY_ENTRIES} entries "
                f"(at byte {start})"
            )
        name = await self._string(MAX_NAME_LEN, "entry name")
        if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
            raise NarError(f"invalid entry name {name!r} at byte {start}")
        if parent.last is not None and name <= parent.last:
            if name == parent.last:
                raise NarError(f"duplicate entry name {name!r} at byte {start}")
            raise NarError(f"entries not sorted at byte {start}: {name!r} after {parent.last!r}")
        parent.last = name
        return name

    async def _regular(self, name: bytes) -> N:
        start, token = await self._token()
        executable = False
        if token == b"executable":
            await self._expect(b"")
            executable = True
            start, token = await self._token()
        if token != b"contents":
            raise NarError(f"expected 'contents' at byte {start}, got {token!r}")
        size = await self._u64()
        contents = _Contents(self._src, size)
        result = await self._visitor.regular(name, executable, size, contents)
        # A visitor that stopped early still leaves the stream positioned right.
        async for _ in contents:
            pass
        await self._padding(size)
        await self._expect(b")")
        return result

    async def _symlink(self, name: bytes) -> N:
        await self._expect(b"target")
        start = self._src.offset
        target = await self._string(MAX_TARGET_LEN, "symlink target")
        if not target or b"\0" in target:
            raise NarError(f"invalid symlink target {target!r} at byte {start}")
        await self._expect(b")")
        return await self._visitor.symlink(name, target)

    async def parse(self, root_name: bytes) -> N:
        start, magic = await self._token()
        if magic != wire.MAGIC:
            raise NarError(f"not a NAR: bad magic {magic!r}")
        stack: list[_Dir[N]] = []
        name = root_name
        while True:
            # Positioned at a node: "(" "type" <kind> ...
            await self._expect(b"(")
            await self._expect(b"type")
            start, kind = await self._token()
            result: N | None = None
            if kind == b"regular":
                result = await self._regular(name)
            elif kind == b"symlink":
                result = await self._symlink(name)
            elif kind == b"directory":
                stack.append(_Dir(name))
            else:
                raise NarError(f"unknown node type {kind!r} at byte {start}")
            # Close finished nodes until the next entry starts (or the root ends).
            while True:
                if result is not None:
                    if not stack:
                        if not await self._src.at_end():
                            raise NarError(
                                f"trailing data after the NAR at byte {self._src.offset}"
                            )
                        return result
                    stack[-1].children.append(result)
                    await self._expect(b")")  # closes the "entry"
                    result = None
                parent = stack[-1]
                start, token = await self._token()
                if token == b")":
                    stack.pop()
                    result = await self._visitor.directory(parent.name, parent.children)
                    continue
                if token != b"entry":
                    raise NarError(f"expected 'entry' or ')' at byte {start}, got {token!r}")
                await self._expect(b"(")
                await self._expect(b"name")
                name = await self._entry_name(parent)
                await self._expect(b"node")
                break


async def read_nar(
    chunks: AsyncIterable[bytes], visitor: NarVisitor[N], root_name: bytes = b""
) -> N:
    """Parse a whole NAR stream, reporting its nodes to ``visitor``.

    The root node is reported under ``root_name``; returns what the visitor
    returned for it. The stream must end exactly where the archive ends.
    """
    return await _Parser(chunks, visitor).parse(root_name)
