"""The binary cache application: a Nix binary cache's URL space over any store.

Routes (GET and HEAD), as Nix and its tools read a cache:

- ``/nix-cache-info``
- ``/<hash>.narinfo``: built from the PathInfo, signed (:mod:`.catalog`);
- ``/nar/<narhash>.nar?hash=<hash>``: the NAR, byte ranges honoured, and
  ``.nar.zst`` for the same NAR zstd-compressed (:mod:`.nar`);
- ``/<hash>.ls``: the NAR listing ``nix copy ...?write-nar-listing=true`` writes.

Paths are matched on the raw request target, before any percent-decoding,
against these exact shapes; nothing maps to a file, so there is no path to
traverse. Written without a framework: four routes do not need one.
"""

from __future__ import annotations

import json
import logging
import re

from .... import nixbase32
from ....errors import NotFoundError, TvixmountError
from ....listing import list_path, to_nix_json
from ....storepath import STORE_DIR
from ... import Store
from .catalog import Catalog, Entry
from .http import Request, Response
from .nar import ByteRange, Unsatisfiable, checked_nar, parse_range, zstd_compressed

log = logging.getLogger(__name__)

_HASH = f"[{nixbase32.ALPHABET}]{{32}}"
_NARHASH = f"[{nixbase32.ALPHABET}]{{52}}"
_NARINFO = re.compile(rf"/({_HASH})\.narinfo")
_LISTING = re.compile(rf"/({_HASH})\.ls")
_NAR = re.compile(rf"/nar/({_NARHASH})\.nar(\.zst)?")
_NAR_QUERY = re.compile(rf"hash=({_HASH})")
# Content is addressed by its hash in the URL: it never changes.
_IMMUTABLE = (b"cache-control", b"public, max-age=31536000, immutable")


class CacheApp:
    """The binary cache's answers to requests (:class:`.http.Server` calls it), over ``store``."""

    def __init__(self, store: Store, catalog: Catalog, priority: int) -> None:
        self._store = store
        self._catalog = catalog
        self._cache_info = f"StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {priority}\n"

    async def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            response = Response.error(405, "only GET and HEAD")
            response.headers.append((b"allow", b"GET, HEAD"))
            return response
        try:
            target = request.path.decode("ascii")
            query = request.query.decode("ascii")
        except UnicodeDecodeError:
            return Response.error(400, "bad request path")
        try:
            return await self._route(target, query, request)
        except TvixmountError as exc:
            log.error("%s: %s", target, exc)
            return Response.error(500, str(exc))

    async def _route(self, target: str, query: str, request: Request) -> Response:
        if target == "/nix-cache-info":
            return Response.text(200, self._cache_info, "text/x-nix-cache-info")
        if match := _NARINFO.fullmatch(target):
            entry = await self._catalog.get(match[1])
            if entry is None:
                return Response.error(404, "no such path")
            return Response(200, [(b"content-type", b"text/x-nix-narinfo")], entry.narinfo)
        if match := _NAR.fullmatch(target):
            hash_match = _NAR_QUERY.fullmatch(query)
            entry = await self._catalog.get(hash_match[1]) if hash_match else None
            if entry is None or nixbase32.encode(entry.info.narinfo.nar_sha256) != match[1]:
                return Response.error(404, "no such NAR")
            return self._nar(
                entry, compressed=bool(match[2]), range_header=request.header(b"range")
            )
        if match := _LISTING.fullmatch(target):
            return await self._listing(match[1])
        if ".." in target or "%" in target or "//" in target or "\\" in target:
            return Response.error(400, "bad request path")
        return Response.error(404, "not found")

    async def _listing(self, encoded: str) -> Response:
        entry = await self._catalog.get(encoded)
        if entry is None:
            return Response.error(404, "no such path")
        try:
            listing = await list_path(
                self._store, str(entry.info.store_path), depth=None, nar_offsets=True
            )
        except NotFoundError:
            return Response.error(404, "no such path")
        body = json.dumps({"version": 1, "root": to_nix_json(listing)}, separators=(",", ":"))
        return Response.text(200, body, "application/json")

    def _nar(self, entry: Entry, compressed: bool, range_header: str | None) -> Response:
        size = entry.info.narinfo.nar_size
        wanted: ByteRange | None = None
        if range_header is not None and not compressed:
            try:
                wanted = parse_range(range_header, size)
            except Unsatisfiable:
                response = Response.error(416, "range not satisfiable")
                response.headers.append((b"content-range", f"bytes */{size}".encode()))
                return response
        stream = checked_nar(entry, self._store, wanted)
        if compressed:
            stream = zstd_compressed(stream)
        response = Response(200, [(b"content-type", b"application/x-nix-nar"), _IMMUTABLE])
        if compressed:
            response.headers.append((b"accept-ranges", b"none"))
        else:
            start, stop = wanted or ByteRange(0, size)
            response.headers.append((b"accept-ranges", b"bytes"))
            response.length = stop - start
            if wanted is not None:
                response.status = 206
                response.headers.append(
                    (b"content-range", f"bytes {start}-{stop - 1}/{size}".encode())
                )
        response.stream = stream
        return response
