"""Declarative fixture stores: one TOML file describing Nix store paths.

A spec is a list of ``[[path]]`` tables. Each names a store path and gives its
contents: a tree of ``files`` (keys are relative paths, directories are
implied), or a single file or symlink given directly on the path table::

    [[path]]
    name = "hello-lib"
    files."lib/greeting" = { text = "Hello from a fixture\\n" }

    [[path]]
    name = "hello"
    references = ["hello-lib"]
    [path.files."bin/hello"]
    text = "#!/bin/sh\\ncat @{hello-lib}/lib/greeting\\n"
    executable = true

An entry is exactly one of ``text`` (UTF-8, placeholders allowed), ``hex``
(raw bytes), ``source`` (a file, relative to the spec's directory),
``generate`` (``{ size, pattern = "zeros" | "counter" | "random", period,
seed }``), ``symlink`` (a target, placeholders allowed) or ``directory =
true``; files may add ``executable = true``.

``@{ID}`` in text or a symlink target is replaced by the absolute store path
of the path with that id (``id`` defaults to ``name``) and makes it a
reference; ``@@{`` writes a literal ``@{``. ``store_path`` pins a path's
basename (to mimic an existing store); unpinned paths get the
content-addressed path Nix computes for ``fixed:r:sha256`` sources.

Parsing validates everything (including that source files exist) and raises
one :class:`~tvixmount.errors.SpecError` naming file, line and reason, so a
bad spec never builds half a store.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from ..castore.nodes import MAX_TARGET_LEN, validate_name
from ..errors import SpecError, StorePathError, ValidationError
from ..storepath import DIGEST_LEN, ENCODED_DIGEST_LEN, STORE_DIR, StorePath
from ._toml_lines import KeyPath, LineIndex

CHUNK_SIZE = 1 << 20
MAX_GENERATED_SIZE = 1 << 40
PATTERNS = ("zeros", "counter", "random")

_PATH_KEYS = ("id", "name", "store_path", "references", "files")
_CONTENT_KEYS = ("text", "hex", "source", "generate", "symlink", "directory")
_ENTRY_KEYS = (*_CONTENT_KEYS, "executable")
_GENERATE_KEYS = ("size", "pattern", "period", "seed")
_PLACEHOLDER = re.compile(r"@@\{|@\{([^}]*)\}|@\{")


@dataclass(frozen=True, slots=True)
class Ref:
    """A placeholder: the absolute store path of the spec path with this id."""

    id: str


Template = tuple[str | Ref, ...]
Resolver = Callable[[str], str]


def render(template: Template, resolve: Resolver) -> str:
    return "".join(part if isinstance(part, str) else resolve(part.id) for part in template)


@dataclass(frozen=True, slots=True)
class Text:
    template: Template

    def chunks(self, resolve: Resolver) -> Iterator[bytes]:
        yield render(self.template, resolve).encode()


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes

    def chunks(self, resolve: Resolver) -> Iterator[bytes]:
        yield self.data


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path

    def chunks(self, resolve: Resolver) -> Iterator[bytes]:
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                yield chunk


@dataclass(frozen=True, slots=True)
class Generated:
    """``size`` bytes of a pattern, produced in chunks so large files cost no memory."""

    size: int
    pattern: str
    period: int = 256  # counter: byte i is i % period
    seed: str = ""  # random: the BLAKE3 output stream keyed by this text

    def chunks(self, resolve: Resolver) -> Iterator[bytes]:
        # A counter block long enough to start at any phase of the cycle.
        block = bytes(range(self.period)) * (CHUNK_SIZE // self.period + 2)
        hasher = blake3.blake3(f"tvixmount fixture random:{self.seed}".encode())
        for offset in range(0, self.size, CHUNK_SIZE):
            length = min(CHUNK_SIZE, self.size - offset)
            if self.pattern == "zeros":
                yield bytes(length)
            elif self.pattern == "counter":
                start = offset % self.period
                yield block[start : start + length]
            else:
                yield hasher.digest(length=length, seek=offset)


Content = Text | Literal | SourceFile | Generated


@dataclass(frozen=True, slots=True)
class FileEntry:
    content: Content
    executable: bool = False


@dataclass(frozen=True, slots=True)
class SymlinkEntry:
    target: Template


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    children: tuple[tuple[bytes, Entry], ...] = ()  # sorted by raw name bytes


Entry = FileEntry | SymlinkEntry | DirectoryEntry


@dataclass(frozen=True, slots=True)
class PathSpec:
    id: str
    name: str
    root: Entry
    references: tuple[str, ...]  # ids: the declared ones plus those content mentions, sorted
    pinned: StorePath | None
    line: int | None


@dataclass(frozen=True, slots=True)
class FixtureSpec:
    """A validated spec; ``paths`` lists every path after the paths it refers to."""

    file: str
    paths: tuple[PathSpec, ...]

    def __getitem__(self, path_id: str) -> PathSpec:
        for path in self.paths:
            if path.id == path_id:
                return path
        raise KeyError(path_id)


def load_spec(file: Path) -> FixtureSpec:
    """Read and validate a spec file; source files resolve beside it."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SpecError(str(file), None, f"cannot read spec: {exc.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise SpecError(str(file), None, f"not UTF-8: {exc.reason}") from None
    return parse_spec(text, str(file), file.parent)


def parse_spec(text: str, file: str = "<spec>", base_dir: Path | None = None) -> FixtureSpec:
    """Validate TOML ``text``; ``file`` names it in errors, sources resolve in ``base_dir``."""
    return _Parser(text, file, base_dir or Path.cwd()).parse()


def absolute_length(name: str) -> int:
    """Length of ``/nix/store/<hash>-<name>``, known before the hash is."""
    return len(STORE_DIR) + 1 + ENCODED_DIGEST_LEN + 1 + len(name)


class _Parser:
    def __init__(self, text: str, file: str, base_dir: Path) -> None:
        self._text = text
        self._file = file
        self._base_dir = base_dir
        self._lines = LineIndex(text)
        self._index = 0  # the [[path]] being parsed
        self._uses: dict[tuple[int, str], KeyPath] = {}  # (path index, id) -> first placeholder

    def error(self, at: KeyPath, reason: str) -> SpecError:
        return SpecError(self._file, self._lines.line_of(at), reason)

    def parse(self) -> FixtureSpec:
        try:
            document = tomllib.loads(self._text)
        except tomllib.TOMLDecodeError as exc:
            raise _toml_error(self._file, exc) from None
        self._check_keys(document, (), ("path",), "the spec")
        tables = document.get("path")
        if tables is None:
            raise SpecError(self._file, None, "no store paths: add at least one [[path]] table")
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise self.error(("path",), "'path' must be an array of tables ([[path]])")
        parsed: list[PathSpec] = []
        first_line: dict[str, int | None] = {}
        for index, table in enumerate(tables):
            self._index = index
            path = self._parse_path(table, ("path", index))
            if path.id in first_line:
                what = "id" if "id" in table else "store path name (give one an `id`)"
                raise self.error(
                    ("path", index, "id" if "id" in table else "name"),
                    f"duplicate {what} {path.id!r}, first used at line {first_line[path.id]}",
                )
            first_line[path.id] = path.line
            parsed.append(path)
        return FixtureSpec(self._file, self._check_references(parsed))

    def _check_keys(
        self, table: Mapping[str, Any], at: KeyPath, allowed: tuple[str, ...], what: str
    ) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(
                    (*at, key), f"unknown key {key!r} in {what} (allowed: {', '.join(allowed)})"
                )

    def _get(self, table: Mapping[str, Any], at: KeyPath, key: str, kind: type) -> Any:
        value = table.get(key)
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise self.error(
                (*at, key), f"{key!r} must be {_KIND_NAMES[kind]}, not {_kind_of(value)}"
            )
        return value

    def _parse_path(self, table: dict[str, Any], at: KeyPath) -> PathSpec:
        self._check_keys(table, at, (*_PATH_KEYS, *_ENTRY_KEYS), "a [[path]] table")
        pinned = None
        pin_text = self._get(table, at, "store_path", str)
        if pin_text is not None:
            try:
                pinned = StorePath.parse(pin_text)
            except StorePathError as exc:
                raise self.error((*at, "store_path"), str(exc)) from None
        name = self._get(table, at, "name", str)
        if name is None:
            if pinned is None:
                raise self.error(at, "a path needs a 'name' (or a 'store_path' to pin)")
            name = pinned.name
        elif pinned is not None and pinned.name != name:
            raise self.error(
                (*at, "name"), f"name {name!r} differs from the pinned store path's {pinned.name!r}"
            )
        try:
            StorePath(bytes(DIGEST_LEN), name)
        except StorePathError as exc:
            raise self.error((*at, "name"), str(exc)) from None
        path_id = self._get(table, at, "id", str)
        if path_id is None:
            path_id = name
        elif not path_id or "}" in path_id:
            raise self.error((*at, "id"), f"invalid id {path_id!r}: empty or contains '}}'")
        references = self._get(table, at, "references", list) or []
        for i, ref in enumerate(references):
            if not isinstance(ref, str):
                raise self.error(
                    (*at, "references"), f"reference {i} must be a string, not {_kind_of(ref)}"
                )
        files = self._get(table, at, "files", dict)
        entry_keys = [k for k in _ENTRY_KEYS if k in table]
        if files is not None:
            if any(k != "directory" for k in entry_keys):
                raise self.error(
                    (*at, entry_keys[0]),
                    f"a path has either 'files' (a directory) or {entry_keys[0]!r} "
                    "(a single file or symlink), not both",
                )
            if "directory" in table:
                self._parse_entry({"directory": table["directory"]}, at)
            root: Entry = self._parse_tree(files, (*at, "files"))
        else:
            root = self._parse_entry({k: table[k] for k in entry_keys}, at)
        mentioned = _mentions(root)
        return PathSpec(
            id=path_id,
            name=name,
            root=root,
            references=tuple(sorted({*references, *mentioned})),
            pinned=pinned,
            line=self._lines.line_of(at),
        )

    def _parse_tree(self, files: dict[str, Any], at: KeyPath) -> DirectoryEntry:
        # Nested dicts mirror the directory tree; None marks an implied directory.
        tree: dict[bytes, Any] = {}
        for key, value in files.items():
            where = (*at, key)
            components = self._split(key, where)
            node = tree
            for depth, component in enumerate(components[:-1]):
                child = node.setdefault(component, {})
                if not isinstance(child, dict):
                    inside = "/".join(c.decode() for c in components[: depth + 1])
                    raise self.error(
                        where, f"{inside!r} is a file or symlink, so {key!r} cannot be inside it"
                    )
                node = child
            if not isinstance(value, dict):
                raise self.error(
                    where,
                    f'entry {key!r} must be a table such as {{ text = "..." }}, '
                    f"not {_kind_of(value)}",
                )
            entry = self._parse_entry(value, where)
            last = components[-1]
            existing = node.get(last)
            if isinstance(entry, DirectoryEntry):
                if existing is not None and not isinstance(existing, dict):
                    raise self.error(where, f"{key!r} is declared twice")
                node.setdefault(last, {})
            elif existing is not None:
                raise self.error(
                    where, f"{key!r} is a directory (paths are declared inside it), not a file"
                )
            else:
                node[last] = entry
        return _freeze(tree)

    def _split(self, key: str, at: KeyPath) -> list[bytes]:
        if key.startswith("/"):
            raise self.error(at, f"file path {key!r} must be relative to the store path")
        components = [c.encode() for c in key.split("/")]
        for component in components:
            try:
                validate_name(component)
            except ValidationError as exc:
                raise self.error(at, f"bad file path {key!r}: {exc}") from None
        return components

    def _parse_entry(self, table: dict[str, Any], at: KeyPath) -> Entry:
        self._check_keys(table, at, _ENTRY_KEYS, "an entry")
        kinds = [k for k in _CONTENT_KEYS if k in table]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise self.error(
                at, f"an entry needs exactly one of {', '.join(_CONTENT_KEYS)} (found: {found})"
            )
        kind = kinds[0]
        executable = self._get(table, at, "executable", bool)
        if executable is not None and kind in ("symlink", "directory"):
            raise self.error((*at, "executable"), f"'executable' applies to files, not a {kind}")
        where = (*at, kind)
        if kind == "directory":
            if self._get(table, at, kind, bool) is not True:
                raise self.error(where, "'directory' can only be true")
            return DirectoryEntry()
        if kind == "symlink":
            template = self._template(self._get(table, at, kind, str), where)
            self._check_target(template, where)
            return SymlinkEntry(template)
        content: Content
        if kind == "text":
            content = Text(self._template(self._get(table, at, kind, str), where))
        elif kind == "hex":
            try:
                content = Literal(bytes.fromhex(self._get(table, at, kind, str)))
            except ValueError as exc:
                raise self.error(where, f"bad hex: {exc}") from None
        elif kind == "source":
            content = SourceFile(self._source(self._get(table, at, kind, str), where))
        else:
            content = self._generated(self._get(table, at, kind, dict), where)
        return FileEntry(content, bool(executable))

    def _template(self, text: str, at: KeyPath) -> Template:
        parts: list[str | Ref] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            literal = text[pos : match.start()]
            token = match.group()
            if token == "@@{":
                parts.append(literal + "@{")
            elif token == "@{":
                raise self.error(at, f"unterminated placeholder at {text[match.start() :][:20]!r}")
            elif not match.group(1):
                raise self.error(at, "empty placeholder @{}")
            else:
                parts.extend([literal, Ref(match.group(1))])
                self._uses.setdefault((self._index, match.group(1)), at)
            pos = match.end()
        parts.append(text[pos:])
        merged: list[str | Ref] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif part != "":
                merged.append(part)
        return tuple(merged)

    def _check_target(self, template: Template, at: KeyPath) -> None:
        if not template:
            raise self.error(at, "symlink with an empty target")
        if any(isinstance(p, str) and "\0" in p for p in template):
            raise self.error(at, "symlink target contains a NUL byte")
        literal = sum(len(p.encode()) for p in template if isinstance(p, str))
        if literal > MAX_TARGET_LEN:
            raise self.error(at, f"symlink target longer than {MAX_TARGET_LEN} bytes")

    def _source(self, text: str, at: KeyPath) -> Path:
        path = (self._base_dir / text).resolve()
        if not path.is_file():
            reason = "is not a regular file" if path.exists() else "does not exist"
            raise self.error(at, f"source file {text!r} {reason} (looked at {path})")
        return path

    def _generated(self, table: dict[str, Any], at: KeyPath) -> Generated:
        self._check_keys(table, at, _GENERATE_KEYS, "'generate'")
        size = self._get(table, at, "size", int)
        if size is None or not 0 <= size <= MAX_GENERATED_SIZE:
            raise self.error(
                (*at, "size"), f"'generate' needs a 'size' from 0 to {MAX_GENERATED_SIZE}"
            )
        pattern = self._get(table, at, "pattern", str) or "zeros"
        if pattern not in PATTERNS:
            raise self.error(
                (*at, "pattern"), f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})"
            )
        period = self._get(table, at, "period", int)
        if period is not None and (pattern != "counter" or not 1 <= period <= 256):
            raise self.error((*at, "period"), "'period' (1 to 256) goes with pattern 'counter'")
        seed = table.get("seed")
        if seed is not None and (pattern != "random" or not isinstance(seed, str | int)):
            raise self.error(
                (*at, "seed"), "'seed' (a string or integer) goes with pattern 'random'"
            )
        return Generated(size, pattern, period or 256, "" if seed is None else str(seed))

    def _check_references(self, paths: list[PathSpec]) -> tuple[PathSpec, ...]:
        """Check every reference resolves and none loops; returns dependencies first."""
        by_id = {p.id: (i, p) for i, p in enumerate(paths)}
        for index, path in enumerate(paths):
            at = ("path", index, "references")
            for ref in path.references:
                if ref == path.id:
                    raise self.error(
                        self._uses.get((index, ref), at),
                        f"path {path.id!r} refers to itself; self-references are not supported",
                    )
                if ref not in by_id:
                    known = ", ".join(sorted(by_id))
                    raise self.error(
                        self._uses.get((index, ref), at),
                        f"unknown reference {ref!r} in path {path.id!r} (known: {known})",
                    )
            self._check_target_lengths(path.root, by_id, ("path", index))
        ordered: list[PathSpec] = []
        state: dict[str, str] = {}  # id -> "visiting" | "done"

        def visit(path: PathSpec, chain: list[str]) -> None:
            if state.get(path.id) == "done":
                return
            if state.get(path.id) == "visiting":
                cycle = " -> ".join([*chain[chain.index(path.id) :], path.id])
                first = by_id[chain[chain.index(path.id)]][0]
                raise self.error(("path", first, "references"), f"reference cycle: {cycle}")
            state[path.id] = "visiting"
            for ref in path.references:
                visit(by_id[ref][1], [*chain, path.id])
            state[path.id] = "done"
            ordered.append(path)

        for path in paths:
            visit(path, [])
        return tuple(ordered)

    def _check_target_lengths(
        self, entry: Entry, by_id: dict[str, tuple[int, PathSpec]], at: KeyPath
    ) -> None:
        """Symlink targets must fit once placeholders become store paths."""
        if isinstance(entry, DirectoryEntry):
            for _, child in entry.children:
                self._check_target_lengths(child, by_id, at)
        elif isinstance(entry, SymlinkEntry):
            length = sum(
                len(p.encode()) if isinstance(p, str) else absolute_length(by_id[p.id][1].name)
                for p in entry.target
            )
            if length > MAX_TARGET_LEN:
                raise self.error(at, f"a symlink target is {length} bytes, over {MAX_TARGET_LEN}")


def _freeze(tree: dict[bytes, Any]) -> DirectoryEntry:
    children: list[tuple[bytes, Entry]] = []
    for name in sorted(tree):
        value = tree[name]
        children.append((name, _freeze(value) if isinstance(value, dict) else value))
    return DirectoryEntry(tuple(children))


def _mentions(entry: Entry) -> set[str]:
    """Ids named by placeholders anywhere in the entry."""
    if isinstance(entry, DirectoryEntry):
        return set().union(*(_mentions(child) for _, child in entry.children))
    if isinstance(entry, SymlinkEntry):
        template: Template = entry.target
    elif isinstance(entry.content, Text):
        template = entry.content.template
    else:
        return set()
    return {p.id for p in template if isinstance(p, Ref)}


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def _kind_of(value: object) -> str:
    for kind, label in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
    ):
        if isinstance(value, kind):
            return label
    return type(value).__name__


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$")


def _toml_error(file: str, exc: tomllib.TOMLDecodeError) -> SpecError:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        return SpecError(file, None, f"invalid TOML: {message}")
    return SpecError(file, int(match.group(1)), f"invalid TOML: {message[: match.start()]}")
