"""Ingest a local file tree into castore, hashing its NAR in the same pass.

The walk visits entries in NAR order (each directory's entries sorted by raw
name bytes, depth first), so the NAR serialisation of the tree can be fed to
SHA-256 as it goes: every file is read exactly once, in big chunks, and each
chunk goes both into the NAR hash and into the blob writer (which computes
the BLAKE3 digest). Directories are collected in post-order, i.e. leaves
first, and only put once the whole tree was read without error.

File reads run inline: ingestion is a batch job of the ``import`` command,
and a thread hop per chunk would cost more than it saves on local disks.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import IngestError
from ..nar import wire
from .blobservice import BlobService
from .directory import Directory
from .directoryservice import DirectoryService
from .nodes import DirectoryNode, FileNode, Node, SymlinkNode

# Big reads keep the per-syscall and per-hash-call overhead negligible while
# a chunk still fits in L2 for the second hash pass (BLAKE3 in the writer).
READ_CHUNK = 1 << 20
# Token bytes are buffered and hashed in batches: one hashlib call per token
# would dominate for trees of many small files.
_TOKEN_FLUSH = 64 << 10


@dataclass(frozen=True, slots=True)
class IngestedTree:
    """The root node of an ingested tree plus the size and SHA-256 of its NAR."""

    node: Node
    nar_size: int
    nar_sha256: bytes


class _NarHash:
    """Running SHA-256 and length of the NAR being produced by the walk."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._pending = bytearray()
        self.size = 0

    def tokens(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= _TOKEN_FLUSH:
            self._flush()

    def contents(self, data: bytes) -> None:
        self._flush()
        self._sha.update(data)
        self.size += len(data)

    def _flush(self) -> None:
        if self._pending:
            self._sha.update(self._pending)
            self.size += len(self._pending)
            self._pending.clear()

    def digest(self) -> bytes:
        self._flush()
        return self._sha.digest()


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return f"an unsupported file type (mode {mode:o})"


def _show(path: bytes) -> str:
    return os.fsdecode(path)


@dataclass(slots=True)
class _Frame:
    """A directory being walked: its sorted entries and the nodes made so far."""

    name: bytes
    path: bytes
    entries: list[bytes]
    children: list[Node] = field(default_factory=list)
    index: int = 0


Progress = Callable[[int], None]


class _Walker:
    def __init__(self, blobs: BlobService, progress: Progress | None) -> None:
        self._blobs = blobs
        self._progress = progress
        self.nar = _NarHash()
        self.directories: dict[bytes, Directory] = {}

    def _lstat(self, path: bytes) -> os.stat_result:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            raise IngestError(f"{_show(path)}: no such file or directory") from None
        except OSError as exc:
            raise IngestError(f"{_show(path)}: cannot stat: {exc.strerror}") from None

    def _list(self, path: bytes) -> list[bytes]:
        try:
            with os.scandir(path) as it:
                return sorted(entry.name for entry in it)
        except OSError as exc:
            raise IngestError(f"{_show(path)}: cannot list directory: {exc.strerror}") from None

    async def _file(self, path: bytes, name: bytes, st: os.stat_result) -> FileNode:
        executable = bool(st.st_mode & stat.S_IXUSR)
        size = st.st_size
        self.nar.tokens(wire.regular_header(executable, size))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise IngestError(f"{_show(path)}: cannot open: {exc.strerror}") from None
        writer = await self._blobs.open_write()
        try:
            done = 0
            while done < size:
                try:
                    chunk = os.read(fd, min(READ_CHUNK, size - done))
                except OSError as exc:
                    raise IngestError(f"{_show(path)}: cannot read: {exc.strerror}") from None
                if not chunk:
                    break
                self.nar.contents(chunk)
                await writer.write(chunk)
                done += len(chunk)
                if self._progress is not None:
                    self._progress(len(chunk))
                if len(chunk) == READ_CHUNK:
                    await trio.lowlevel.checkpoint()
            # The NAR header already promised ``size`` bytes: a file that
            # changed under us would make the hash describe nothing real.
            if done != size or os.read(fd, 1):
                raise IngestError(f"{_show(path)}: file changed size while being read")
        except BaseException:
            await writer.abort()
            raise
        finally:
            os.close(fd)
        digest = await writer.finish()
        self.nar.tokens(wire.regular_trailer(size))
        return FileNode(name, digest, size, executable)

    def _symlink(self, path: bytes, name: bytes) -> SymlinkNode:
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise IngestError(f"{_show(path)}: cannot read symlink: {exc.strerror}") from None
        self.nar.tokens(wire.symlink(target))
        return SymlinkNode(name, target)

    async def _leaf(self, path: bytes, name: bytes, st: os.stat_result) -> Node:
        if stat.S_ISREG(st.st_mode):
            return await self._file(path, name, st)
        if stat.S_ISLNK(st.st_mode):
            return self._symlink(path, name)
        raise IngestError(f"{_show(path)}: cannot import {_kind(st.st_mode)}")

    def _finish_directory(self, frame: _Frame) -> DirectoryNode:
        self.nar.tokens(wire.CLOSE)
        directory = Directory.from_nodes(frame.children)
        digest = directory.digest()
        # dict keeps first-insertion order, so leaves stay ahead of their parents.
        self.directories.setdefault(digest, directory)
        return DirectoryNode(frame.name, digest, directory.size())

    async def walk(self, root: bytes, name: bytes) -> Node:
        self.nar.tokens(wire.HEADER)
        st = self._lstat(root)
        if not stat.S_ISDIR(st.st_mode):
            return await self._leaf(root, name, st)
        self.nar.tokens(wire.DIRECTORY_PREFIX)
        # An explicit stack: directory depth is bounded by PATH_MAX, not by
        # Python's recursion limit.
        stack = [_Frame(name, root, self._list(root))]
        while True:
            frame = stack[-1]
            if frame.index < len(frame.entries):
                child_name = frame.entries[frame.index]
                frame.index += 1
                child_path = os.path.join(frame.path, child_name)
                self.nar.tokens(wire.entry_header(child_name))
                st = self._lstat(child_path)
                if stat.S_ISDIR(st.st_mode):
                    self.nar.tokens(wire.DIRECTORY_PREFIX)
                    stack.append(_Frame(child_name, child_path, self._list(child_path)))
                    continue
                frame.children.append(await self._leaf(child_path, child_name, st))
                self.nar.tokens(wire.ENTRY_CLOSE)
                continue
            stack.pop()
            node = self._finish_directory(frame)
            if not stack:
                return node
            stack[-1].children.append(node)
            self.nar.tokens(wire.ENTRY_CLOSE)
            await trio.lowlevel.checkpoint()


async def ingest_path(
    path: Path | str,
    blobs: BlobService,
    directories: DirectoryService,
    name: bytes | None = None,
    progress: Progress | None = None,
) -> IngestedTree:
    """Ingest ``path`` (not following a symlink at the root) into castore.

    Returns the root node (named ``name``, default the path's basename) with
    the size and SHA-256 of the tree's NAR serialisation. Anything but
    regular files, directories and symlinks raises :class:`IngestError`
    naming the offending path; no Directory is stored unless the whole walk
    succeeded (blobs may remain: they are content-addressed and harmless).
    ``progress`` is called with the number of file bytes after each read.
    """
    root = os.fsencode(os.path.abspath(path))
    walker = _Walker(blobs, progress)
    node = await walker.walk(root, os.path.basename(root) if name is None else name)
    if walker.directories:
        await directories.put_many(list(walker.directories.values()))
    nar_sha256 = walker.nar.digest()  # flushes pending tokens, so read the size after it
    return IngestedTree(node, walker.nar.size, nar_sha256)
