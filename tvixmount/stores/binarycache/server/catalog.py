"""What the HTTP cache says about a store path: its PathInfo and signed narinfo, remembered.

Nix asks for a path's narinfo, then for its NAR, and a busy cache answers
the same narinfos over and over; a bounded LRU keeps the PathInfo and the
narinfo text (formatted and signed once) for both. Only paths found are
remembered: a path imported into the store later is served at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .... import nixbase32
from ....nar.narinfo import Narinfo
from ....nar.signing import SecretKey, sign_narinfo
from ....pathinfo.model import PathInfo
from ... import Store

NARINFO_CACHE_ENTRIES = 10_000  # about 1 KiB each with the PathInfo


def nar_url(info: PathInfo) -> str:
    """Where the NAR is served, relative to the cache root (harmonia's scheme).

    The NAR hash names the content, so the URL stays valid as long as the
    path exists; ``hash=`` names the path that holds it, so the server needs
    no NAR-hash index.
    """
    narhash = nixbase32.encode(info.narinfo.nar_sha256)
    return f"nar/{narhash}.nar?hash={info.store_path.encoded_digest}"


def narinfo_of(info: PathInfo, keys: Sequence[SecretKey]) -> Narinfo:
    """The narinfo of an uncompressed NAR, signed by every key (kept signatures stay)."""
    narinfo = Narinfo.from_pathinfo(info, nar_url(info), "none")
    for key in keys:
        narinfo = sign_narinfo(narinfo, key)
    return narinfo


@dataclass(slots=True)
class Entry:
    info: PathInfo
    narinfo: bytes  # the formatted, signed text
    # Set once a NAR built from ``info`` matched its NarHash (see .nar).
    nar_verified: bool = False


class Catalog:
    """Store path hash (nixbase32, as in URLs) -> :class:`Entry`, through a bounded LRU.

    Used from the trio loop only, so no lock: two requests missing the same
    path both ask the store, which is harmless.
    """

    def __init__(
        self, store: Store, keys: Sequence[SecretKey], entries: int = NARINFO_CACHE_ENTRIES
    ) -> None:
        self._store = store
        self._keys = tuple(keys)
        self._entries = entries
        # Keyed by the URL's text: a hit costs no decoding.
        self._cache: OrderedDict[str, Entry] = OrderedDict()

    async def get(self, encoded: str) -> Entry | None:
        entry = self._cache.get(encoded)
        if entry is not None:
            self._cache.move_to_end(encoded)
            return entry
        digest = nixbase32.decode(encoded)
        info = await self._store.pathinfos.get(digest)
        # An answer for another digest is another path: this one is absent.
        if info is None or info.store_path.digest != digest:
            return None
        entry = Entry(info, narinfo_of(info, self._keys).format().encode())
        self._cache[encoded] = entry
        if len(self._cache) > self._entries:
            self._cache.popitem(last=False)
        return entry
