"""Line numbers for the tables and keys of a TOML document.

``tomllib`` hands back plain dicts and lists without positions, but a spec
error is only useful when it points at a line. This scanner reads the TOML
text once and records, for every table header and key it sees, the line it
is on, keyed by the same path the parsed document uses (array-of-tables
elements are addressed by their index, as in ``("path", 2, "files")``).

It understands headers, dotted and quoted keys, inline tables on one line and
multi-line strings (so a ``[x]`` inside a string is not taken for a header).
Keys it cannot place (inline tables inside arrays) fall back to the line of
the nearest enclosing table or key, which is still the right neighbourhood.
"""

from __future__ import annotations

import re
import tomllib

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class LineIndex:
    """Maps key paths of a TOML document to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._array_index: dict[KeyPath, int] = {}
        self._scan(text)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest recorded ancestor."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], line)

    def _resolve(self, parts: list[str]) -> KeyPath:
        """A header's dotted key with the current index of every array of tables in it."""
        resolved: KeyPath = ()
        for part in parts:
            resolved = (*resolved, part)
            if resolved in self._array_index:
                resolved = (*resolved, self._array_index[resolved])
        return resolved

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        open_string: str | None = None  # the delimiter of a multi-line string left open
        for number, line in enumerate(text.splitlines(), start=1):
            if open_string is not None:
                end = _find_closing(line, 0, open_string)
                if end < 0:
                    continue
                open_string = _scan_value(line, end, None, number, self)
                continue
            stripped = line.lstrip()
            pos = len(line) - len(stripped)
            if stripped.startswith("[["):
                parts, end = _parse_key(line, pos + 2)
                if parts:
                    parent = self._resolve(parts[:-1])
                    array = (*parent, parts[-1])
                    index = self._array_index.get(array, -1) + 1
                    self._array_index[array] = index
                    table = (*array, index)
                    self._record(table, number)
            elif stripped.startswith("["):
                parts, end = _parse_key(line, pos + 1)
                if parts:
                    table = self._resolve(parts)
                    self._record(table, number)
            elif stripped and stripped[0] not in "#]},":
                parts, end = _parse_key(line, pos)
                if parts and end < len(line) and line[end] == "=":
                    path = (*table, *parts)
                    self._record(path, number)
                    open_string = _scan_value(line, end + 1, path, number, self)
                else:
                    open_string = _scan_value(line, pos, None, number, self)


def _find_closing(line: str, pos: int, delimiter: str) -> int:
    """Index just after the ``delimiter`` closing a string, or -1 if it stays open."""
    escapes = delimiter[0] == '"'
    while pos < len(line):
        if escapes and line[pos] == "\\":
            pos += 2
            continue
        if line.startswith(delimiter, pos):
            end = pos + len(delimiter)
            # A closing """ may be followed by up to two more quotes that belong to the string.
            while end < len(line) and line[end] == delimiter[0] and len(delimiter) == 3:
                end += 1
            return end
        pos += 1
    return -1


def _parse_key(line: str, pos: int) -> tuple[list[str], int]:
    """A dotted key starting at ``pos``: its parts and the index after it (and spaces)."""
    parts: list[str] = []
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos >= len(line):
            return [], pos
        char = line[pos]
        if char in "\"'":
            end = _find_closing(line, pos + 1, char)
            if end < 0:
                return [], pos
            try:
                parts.append(str(tomllib.loads(f"k = {line[pos:end]}")["k"]))
            except tomllib.TOMLDecodeError:
                return [], pos
            pos = end
        else:
            match = _BARE_KEY.match(line, pos)
            if match is None:
                return [], pos
            parts.append(match.group())
            pos = match.end()
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ".":
            pos += 1
            continue
        return parts, pos


def _scan_value(
    line: str, pos: int, path: KeyPath | None, number: int, index: LineIndex
) -> str | None:
    """Record the keys of inline tables in a value; returns an unclosed string delimiter."""
    # Each open bracket remembers the key path of its contents (None inside arrays).
    stack: list[tuple[str, KeyPath | None]] = []
    pending = path
    while pos < len(line):
        char = line[pos]
        if char == "#":
            return None
        if char in "\"'":
            delimiter = char * 3 if line.startswith(char * 3, pos) else char
            end = _find_closing(line, pos + len(delimiter), delimiter)
            if end < 0:
                return delimiter if len(delimiter) == 3 else None
            pos = end
            continue
        if char == "{" or (char == "," and stack and stack[-1][0] == "{"):
            if char == "{":
                stack.append(("{", pending))
            parts, end = _parse_key(line, pos + 1)
            owner = stack[-1][1]
            if parts and end < len(line) and line[end] == "=":
                pending = None if owner is None else (*owner, *parts)
                if pending is not None:
                    index._record(pending, number)
                pos = end + 1
                continue
        elif char == "[":
            stack.append(("[", None))
            pending = None
        elif char in "]}" and stack:
            stack.pop()
        pos += 1
    return None
