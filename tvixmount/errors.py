"""The project's exception hierarchy.

Library code raises these; the fs layer maps them to errno and the CLI maps
them to exit codes and one-line messages. Nowhere else translates them.
"""

from __future__ import annotations


class TvixmountError(Exception):
    """Base of every error tvixmount raises on purpose."""


class Nixbase32Error(TvixmountError, ValueError):
    """Text that is not valid nixbase32."""


class StorePathError(TvixmountError, ValueError):
    """A string that is not a valid Nix store path (basename or absolute)."""


class DigestError(TvixmountError, ValueError):
    """A digest of the wrong length or an unparsable digest text."""


class ValidationError(TvixmountError, ValueError):
    """A castore Directory/node or a PathInfo that breaks the data-model rules."""


class DecodeError(TvixmountError, ValueError):
    """Bytes that do not decode as the expected protobuf message."""


class NarError(TvixmountError, ValueError):
    """A malformed or non-canonical NAR stream."""


class NarinfoError(TvixmountError, ValueError):
    """A malformed narinfo file."""


class SigningKeyError(TvixmountError, ValueError):
    """A public or secret signing key (``NAME:BASE64``) that cannot be used."""


class IngestError(TvixmountError):
    """A local file tree that cannot be ingested (e.g. a socket or device)."""


class StoreError(TvixmountError):
    """A store (service) failed: unreachable, corrupt, or misconfigured."""


class StoreURLError(StoreError, ValueError):
    """A store URL that cannot be opened (unknown scheme, bad form)."""


class NixConfigError(StoreError):
    """A nix.conf that Nix itself would refuse."""


class NotFoundError(TvixmountError, LookupError):
    """A requested object is absent from a store that otherwise answered."""


class IntegrityError(StoreError):
    """Data whose bytes do not match the digest or hash it must have."""


class MountError(TvixmountError):
    """The mount point cannot be used (missing, not empty, already mounted)."""


class SpecError(ValidationError):
    """A fixture spec (TOML) that cannot be built; says which file, which line and why."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
