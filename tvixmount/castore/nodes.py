"""The three castore node kinds and their protobuf form.

A node is a named reference: a directory (by Directory digest), a file (by
blob digest) or a symlink (by target). Names and targets are raw bytes.

Nodes are named tuples rather than frozen dataclasses because decoding a
Directory makes one per entry: a frozen dataclass sets each field through
``object.__setattr__`` (1.5 µs for a FileNode), a tuple is built in one step
(0.35 µs), and decoding is what every first lookup below a directory pays.
Equality is a tuple's; the three kinds never compare equal, as their
lengths differ.
"""

from __future__ import annotations

from typing import NamedTuple

from .._proto import castore_pb2 as pb
from ..errors import DigestError, ValidationError
from .digest import DIGEST_SIZE, B3Digest

MAX_NAME_LEN = 255
MAX_TARGET_LEN = 4095


def validate_name(name: bytes) -> None:
    """Node names: non-empty, not ``.``/``..``, <= 255 bytes, no NUL, no ``/``."""
    if not name:
        raise ValidationError("invalid node name: empty")
    if name in (b".", b".."):
        raise ValidationError(f"invalid node name {name!r}: '.' and '..' are not allowed")
    if len(name) > MAX_NAME_LEN:
        raise ValidationError(
            f"invalid node name {name[:40]!r}...: {len(name)} bytes, at most {MAX_NAME_LEN}"
        )
    if b"\0" in name:
        raise ValidationError(f"invalid node name {name!r}: contains a NUL byte")
    if b"/" in name:
        raise ValidationError(f"invalid node name {name!r}: contains '/'")


def validate_target(name: bytes, target: bytes) -> None:
    if not target:
        raise ValidationError(f"symlink {name!r}: empty target")
    if len(target) > MAX_TARGET_LEN:
        raise ValidationError(
            f"symlink {name!r}: target is {len(target)} bytes, at most {MAX_TARGET_LEN}"
        )
    if b"\0" in target:
        raise ValidationError(f"symlink {name!r}: target contains NUL")


def _validate_reference(name: bytes, digest: bytes, size: int) -> None:
    # Nodes built in code (not from protobuf) may carry plain bytes or a bad size.
    if len(digest) != DIGEST_SIZE:
        raise ValidationError(f"entry {name!r}: digest is {len(digest)} bytes, not {DIGEST_SIZE}")
    if not 0 <= size < 1 << 64:
        raise ValidationError(f"entry {name!r}: size {size} is not a uint64")


def entry_digest(name: bytes, raw: bytes) -> B3Digest:
    """The digest of entry ``name``; a wrong length is a validation error naming the entry."""
    try:
        return B3Digest(raw)
    except DigestError as exc:
        raise ValidationError(f"entry {name!r}: {exc}") from None


class DirectoryNode(NamedTuple):
    name: bytes
    digest: B3Digest
    size: int

    def validate(self) -> None:
        validate_name(self.name)
        _validate_reference(self.name, self.digest, self.size)

    def to_proto(self) -> pb.DirectoryNode:
        return pb.DirectoryNode(name=self.name, digest=bytes(self.digest), size=self.size)

    @classmethod
    def from_proto(cls, msg: pb.DirectoryNode) -> DirectoryNode:
        return cls(msg.name, entry_digest(msg.name, msg.digest), msg.size)


class FileNode(NamedTuple):
    name: bytes
    digest: B3Digest
    size: int
    executable: bool = False

    def validate(self) -> None:
        validate_name(self.name)
        _validate_reference(self.name, self.digest, self.size)

    def to_proto(self) -> pb.FileNode:
        return pb.FileNode(
            name=self.name, digest=bytes(self.digest), size=self.size, executable=self.executable
        )

    @classmethod
    def from_proto(cls, msg: pb.FileNode) -> FileNode:
        return cls(msg.name, entry_digest(msg.name, msg.digest), msg.size, msg.executable)


class SymlinkNode(NamedTuple):
    name: bytes
    target: bytes

    def validate(self) -> None:
        validate_name(self.name)
        validate_target(self.name, self.target)

    def to_proto(self) -> pb.SymlinkNode:
        return pb.SymlinkNode(name=self.name, target=self.target)

    @classmethod
    def from_proto(cls, msg: pb.SymlinkNode) -> SymlinkNode:
        return cls(msg.name, msg.target)


Node = DirectoryNode | FileNode | SymlinkNode


def node_to_proto(node: Node) -> pb.Node:
    if isinstance(node, DirectoryNode):
        return pb.Node(directory=node.to_proto())
    if isinstance(node, FileNode):
        return pb.Node(file=node.to_proto())
    return pb.Node(symlink=node.to_proto())


def node_from_proto(msg: pb.Node) -> Node:
    """Convert and validate a ``Node`` message (a node must be set)."""
    kind = msg.WhichOneof("node")
    node: Node
    if kind == "directory":
        node = DirectoryNode.from_proto(msg.directory)
    elif kind == "file":
        node = FileNode.from_proto(msg.file)
    elif kind == "symlink":
        node = SymlinkNode.from_proto(msg.symlink)
    else:
        raise ValidationError("node is not set")
    node.validate()
    return node


def rename(node: Node, name: bytes) -> Node:
    """The same node under another name."""
    if isinstance(node, DirectoryNode):
        return DirectoryNode(name, node.digest, node.size)
    if isinstance(node, FileNode):
        return FileNode(name, node.digest, node.size, node.executable)
    return SymlinkNode(name, node.target)
