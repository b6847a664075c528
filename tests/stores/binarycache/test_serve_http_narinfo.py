"""The narinfo ``serve --http`` makes of a PathInfo: every field Nix reads, signatures kept."""

from __future__ import annotations

import os

from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import FileNode
from tvixmount.nar.narinfo import Narinfo
from tvixmount.nar.signing import SecretKey, pathinfo_signers, valid_signers
from tvixmount.pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores.binarycache.server.catalog import narinfo_of


def _path(name: str) -> StorePath:
    return StorePath(os.urandom(20), name)


def _pathinfo(keys: list[SecretKey]) -> PathInfo:
    path, dependency = _path("hello-2.12"), _path("glibc-2.37")
    deriver = StorePath(os.urandom(20), "hello-2.12")  # tvix keeps it without ".drv"
    node = FileNode(str(path).encode(), B3Digest(os.urandom(32)), 5, True)
    unsigned = PathInfo(
        node,
        (dependency.digest,),
        NarInfo(nar_size=136, nar_sha256=os.urandom(32), reference_names=(str(dependency),)),
    )
    narinfo = narinfo_of(unsigned, keys)
    return PathInfo(
        node,
        unsigned.references,
        NarInfo(
            nar_size=136,
            nar_sha256=unsigned.narinfo.nar_sha256,
            signatures=narinfo.signatures,
            reference_names=unsigned.narinfo.reference_names,
            deriver=deriver,
            ca=ContentAddress(CAHash.NAR_SHA256, os.urandom(32)),
        ),
    )


def test_every_field_nix_reads_round_trips() -> None:
    info = _pathinfo([])
    text = narinfo_of(info, []).format()
    parsed = Narinfo.parse(text)
    assert parsed.store_path == info.store_path
    assert parsed.compression == "none"
    assert parsed.url.startswith("nar/") and ".nar?hash=" in parsed.url
    assert (parsed.nar_hash, parsed.nar_size) == (info.narinfo.nar_sha256, 136)
    assert parsed.references == tuple(info.reference_paths)
    assert parsed.deriver is not None and info.narinfo.deriver is not None
    assert str(parsed.deriver) == f"{info.narinfo.deriver}.drv"
    assert parsed.ca == info.narinfo.ca


def test_signatures_already_kept_stay_and_every_key_signs() -> None:
    upstream, ours, also_ours = (SecretKey.generate(n) for n in ("up-1", "ours-1", "ours-2"))
    info = _pathinfo([upstream])
    assert pathinfo_signers(info, [upstream.public_key()]) == ["up-1"]
    parsed = Narinfo.parse(narinfo_of(info, [ours, also_ours]).format())
    keys = [k.public_key() for k in (upstream, ours, also_ours)]
    assert valid_signers(parsed, keys) == ["up-1", "ours-1", "ours-2"]
