"""Nix's configuration, read the way Nix reads it, for the settings tvixmount shares with Nix.

Files, in the order Nix applies them (a later setting wins, ``extra-NAME``
appends to ``NAME``):

1. ``$NIX_CONF_DIR/nix.conf`` (``NIX_CONF_DIR`` defaults to ``/etc/nix``);
2. ``$NIX_USER_CONF_FILES`` (colon separated) if set, else ``nix/nix.conf``
   under each of ``$XDG_CONFIG_DIRS`` (default ``/etc/xdg``) and then
   ``$XDG_CONFIG_HOME`` (default ``~/.config``); the first listed wins, so
   they are applied last to first, as Nix does;
3. the lines of the ``NIX_CONFIG`` variable.

A line is ``name = value`` (``#`` starts a comment, values are split on
white space), or ``include PATH`` / ``!include PATH`` with ``PATH``
relative to the including file; ``!include`` of a missing file is
ignored, ``include`` of one is an error, as in Nix. Settings tvixmount does
not use are read and ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import NixConfigError

# Nix's built-in default (libstore/globals.hh).
DEFAULT_TRUSTED_PUBLIC_KEYS = ("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=",)
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_MAX_INCLUDE_DEPTH = 32  # a file that includes itself must not recurse forever


@dataclass(frozen=True)
class NixConfig:
    trusted_public_keys: tuple[str, ...]
    require_sigs: bool
    netrc_file: Path
    require_sigs_source: str | None  # where require-sigs was set, for messages


class _Settings:
    def __init__(self, defaults: Mapping[str, str]) -> None:
        self.values = dict(defaults)
        self.sources: dict[str, str] = {}

    def apply(self, name: str, value: str, source: str) -> None:
        if name.startswith("extra-"):
            name = name.removeprefix("extra-")
            value = f"{self.values.get(name, '')} {value}".strip()
        self.values[name] = value
        self.sources[name] = source

    def apply_text(self, text: str, path: Path, source: str, depth: int = 0) -> None:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            tokens = raw.partition("#")[0].split()
            if not tokens:
                continue
            where = f"{source}:{lineno}"
            if tokens[0] in ("include", "!include"):
                if len(tokens) != 2:
                    raise NixConfigError(f"{where}: syntax error in configuration line {raw!r}")
                included = path.parent / tokens[1]  # an absolute PATH stays as it is
                if depth >= _MAX_INCLUDE_DEPTH:
                    raise NixConfigError(f"{where}: includes nest deeper than {depth}")
                if not self.apply_file(included, depth + 1) and tokens[0] == "include":
                    raise NixConfigError(f"{where}: included file {included} not found")
                continue
            if len(tokens) < 2 or tokens[1] != "=":
                raise NixConfigError(f"{where}: illegal configuration line {raw!r}")
            self.apply(tokens[0], " ".join(tokens[2:]), where)

    def apply_file(self, path: Path, depth: int = 0) -> bool:
        """Apply ``path`` if it exists; whether it did."""
        try:
            text = path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except (OSError, UnicodeDecodeError) as exc:
            raise NixConfigError(f"{path}: cannot read: {exc}") from None
        self.apply_text(text, path, str(path), depth)
        return True


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """The files Nix reads, in the order it applies them."""
    conf_dir = Path(environ.get("NIX_CONF_DIR") or "/etc/nix")
    files = [conf_dir / "nix.conf"]
    user_files = environ.get("NIX_USER_CONF_FILES")
    if user_files is not None:
        listed = [Path(p) for p in user_files.split(":") if p]
    else:
        home = environ.get("HOME") or os.path.expanduser("~")
        config_home = environ.get("XDG_CONFIG_HOME") or f"{home}/.config"
        config_dirs = (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
        listed = [Path(d) / "nix" / "nix.conf" for d in [config_home, *config_dirs] if d]
    files.extend(reversed(listed))  # the first listed wins, so it is applied last
    return files


def read_nix_config(environ: Mapping[str, str] | None = None) -> NixConfig:
    """The settings tvixmount shares with Nix, from the files and ``NIX_CONFIG``."""
    environ = os.environ if environ is None else environ
    conf_dir = Path(environ.get("NIX_CONF_DIR") or "/etc/nix")
    settings = _Settings(
        {
            "trusted-public-keys": " ".join(DEFAULT_TRUSTED_PUBLIC_KEYS),
            "require-sigs": "true",
            "netrc-file": str(conf_dir / "netrc"),
        }
    )
    for path in config_files(environ):
        settings.apply_file(path)
    inline = environ.get("NIX_CONFIG")
    if inline:
        settings.apply_text(inline, Path(os.getcwd()) / "NIX_CONFIG", "NIX_CONFIG")
    require = settings.values["require-sigs"]
    if require not in _TRUE + _FALSE:
        where = settings.sources.get("require-sigs", "require-sigs")
        raise NixConfigError(f"{where}: require-sigs = {require!r} is not true or false")
    return NixConfig(
        trusted_public_keys=tuple(settings.values["trusted-public-keys"].split()),
        require_sigs=require in _TRUE,
        netrc_file=Path(settings.values["netrc-file"]),
        require_sigs_source=settings.sources.get("require-sigs"),
    )


__all__ = ["NixConfig", "config_files", "read_nix_config"]
