"""Real Nix binary caches for tests, written by nix-bin, and loopback servers for them.

Every cache is made the way a user would make one: ``nix-store --add`` a tree,
``nix-store --generate-binary-cache-key``, ``nix store sign --key-file``,
``nix copy --to file://DIR?compression=...``. Trees carry a random salt, so
each build gets store paths of its own (signatures Nix records in its local
database never leak from one test's paths into another's).
"""

from __future__ import annotations

import contextlib
import http.server
import secrets
import shutil
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tvixmount.nar.narinfo import Narinfo
from tvixmount.nar.writer import calculate_nar
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, StoreOptions, open_store

HAVE_NIX = shutil.which("nix-store") is not None and shutil.which("nix") is not None
requires_nix = pytest.mark.skipif(not HAVE_NIX, reason="nix-bin (nix-store, nix) is not installed")
NIX_FLAGS = ("--extra-experimental-features", "nix-command")
COMPRESSIONS = ("none", "xz", "bzip2", "zstd", "br")
# A store path no cache holds.
ABSENT = "00000000000000000000000000000000-absent"
BUSYBOX = Path("/bin/busybox")


def _run(*argv: str) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_tree(root: Path, salt: str, busybox: bool = False) -> Path:
    """A tree with every NAR node kind: files, executables, symlinks, nested and empty dirs.

    ``busybox`` adds a copy of /bin/busybox (a real ELF executable, ~2 MB: slow to
    compress with xz or br, so only where a test runs it).
    """
    root.mkdir(parents=True)
    (root / "salt").write_text(salt + "\n")
    (root / "hello.txt").write_text("Hello World!\n")
    (root / "empty").write_bytes(b"")
    script = root / "hello.sh"
    script.write_text('#!/bin/sh\necho "hello from the mount $1"\n')
    script.chmod(0o755)
    (root / "bin").mkdir()
    if busybox:
        shutil.copy(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
    (root / "link").symlink_to("hello.txt")
    (root / "dangling").symlink_to("/nix/store/somewhereelse")
    nested = root / "a" / "b" / "c"
    nested.mkdir(parents=True)
    (nested / "deep.bin").write_bytes(bytes(range(256)) * 256 + salt.encode())
    (root / "emptydir").mkdir()
    return root


def nix_add(path: Path) -> str:
    return _run("nix-store", "--add", str(path))


def text_referring_to(dependency: str, salt: str) -> str:
    """A store path (``builtins.toFile``) whose References name ``dependency``."""
    expression = (
        f'builtins.toFile "refs-{salt[:8]}.txt" "{salt} uses ${{builtins.storePath {dependency}}}"'
    )
    out = _run("nix-instantiate", "--eval", "--read-write-mode", "-E", expression)
    return out.strip('"')


@dataclass
class SigningKey:
    name: str
    secret_file: Path
    public: str

    @property
    def secret(self) -> str:
        return self.secret_file.read_text().strip()


def generate_key(workdir: Path, name: str) -> SigningKey:
    secret_file = workdir / f"{name}.sec"
    public_file = workdir / f"{name}.pub"
    _run("nix-store", "--generate-binary-cache-key", name, str(secret_file), str(public_file))
    return SigningKey(name, secret_file, public_file.read_text().strip())


def nix_sign(paths: list[str], key: SigningKey) -> None:
    _run("nix", *NIX_FLAGS, "store", "sign", "--key-file", str(key.secret_file), *paths)


def nix_copy(paths: list[str], cache_dir: Path, compression: str) -> None:
    _run("nix", *NIX_FLAGS, "copy", "--to", f"file://{cache_dir}?compression={compression}", *paths)


@dataclass
class NixCache:
    """A binary cache directory and what Nix put into it."""

    dir: Path
    paths: list[str]  # absolute store paths
    trees: dict[str, Path]  # store path -> the tree it was added from (trees only)
    key: SigningKey | None
    compression: str
    narinfos: dict[str, Narinfo] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"file://{self.dir}"

    def narinfo_file(self, store_path: str) -> Path:
        return self.dir / narinfo_name(store_path)

    def nar_file(self, store_path: str) -> Path:
        return self.dir / self.narinfos[store_path].url

    def rewrite_narinfo(self, store_path: str, text: str) -> None:
        self.narinfo_file(store_path).write_text(text)

    def strip_content_addresses(self) -> None:
        """Drop every narinfo's CA line: Nix serves unsigned CA paths, and tests of
        signatures need paths that only a signature can vouch for (signatures do not
        cover the CA field, so they stay valid)."""
        for path in self.paths:
            text = self.narinfo_file(path).read_text()
            kept = [line for line in text.splitlines() if not line.startswith("CA: ")]
            self.rewrite_narinfo(path, "\n".join(kept) + "\n")
            self.narinfos[path] = Narinfo.parse(self.narinfo_file(path).read_text())


def build_cache(
    workdir: Path,
    compression: str = "xz",
    key: SigningKey | None = None,
    trees: int = 1,
    with_reference: bool = True,
    busybox: bool = False,
    content_addressed: bool = True,
) -> NixCache:
    """Add ``trees`` fresh trees (and a path referring to the first), sign, copy to a cache.

    ``content_addressed=False`` drops the narinfos' CA lines (see
    :meth:`NixCache.strip_content_addresses`).
    """
    salt = secrets.token_hex(8)
    workdir.mkdir(parents=True, exist_ok=True)
    tree_paths: dict[str, Path] = {}
    for i in range(trees):
        tree = make_tree(workdir / f"tree{i}-{salt}", f"{salt}-{i}", busybox)
        tree_paths[nix_add(tree)] = tree
    paths = list(tree_paths)
    if with_reference:
        paths.append(text_referring_to(paths[0], salt))
    if key is not None:
        nix_sign(paths, key)
    cache_dir = workdir / f"cache-{compression}-{salt}"
    nix_copy(paths, cache_dir, compression)
    cache = NixCache(cache_dir, paths, tree_paths, key, compression)
    for path in paths:
        cache.narinfos[path] = Narinfo.parse(cache.narinfo_file(path).read_text())
    if not content_addressed:
        cache.strip_content_addresses()
    return cache


# -- loopback HTTP ------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    requests: Counter[str]  # path -> how many GETs
    headers: list[dict[str, str]]  # every request's headers, in order
    fail_next: dict[str, int]  # path -> how many 503s to answer before serving it
    hold: dict[str, threading.Event]  # path -> answer only once the event is set


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[Served]:
    """``http.server`` on 127.0.0.1 serving ``root`` in a thread, counting requests."""
    served = Served("", Counter(), [], {}, {})
    lock = threading.Lock()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            with lock:
                served.requests[path] += 1
                served.headers.append(dict(self.headers.items()))
                failing = served.fail_next.get(path, 0)
                if failing:
                    served.fail_next[path] = failing - 1
                gate = served.hold.get(path)
            if gate is not None:
                gate.wait()
            if failing:
                self.send_error(503, "try again")
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def nix_hash(path: Path | str) -> str:
    """``nix-hash --type sha256 --base32`` of a tree (the NAR hash, nixbase32)."""
    return _run("nix-hash", "--type", "sha256", "--base32", str(path))


# -- opening a cache through the store layer ------------------------------------------------


@contextlib.asynccontextmanager
async def opened(
    url: str, cache_dir: Path, keys: Sequence[str] = (), require_sigs: bool = True
) -> AsyncIterator[Store]:
    """``open_store`` on a binary cache URL with a local cache in ``cache_dir``."""
    options = StoreOptions(
        cache_dir=cache_dir, trusted_public_keys=tuple(keys), require_sigs=require_sigs
    )
    store = open_store(url, options)
    try:
        yield store
    finally:
        await store.aclose()


def digest_of(store_path: str) -> bytes:
    return StorePath.parse(store_path).digest


def key_args(cache: NixCache) -> list[str]:
    """The CLI's flag trusting ``cache``'s signing key."""
    assert cache.key is not None
    return ["--trusted-public-key", cache.key.public]


def copy_from_args(cache: NixCache, cache_dir: Path) -> list[str]:
    """``copy --from`` the Nix-written ``cache``, trusting its key, cached in ``cache_dir``."""
    return ["--from", cache.url, *key_args(cache), "--cache-dir", str(cache_dir)]


def narinfo_name(store_path: str) -> str:
    """The key of ``store_path``'s narinfo in a binary cache."""
    return f"{StorePath.parse(store_path).encoded_digest}.narinfo"


async def cached_paths(store: Store) -> list[str]:
    """What the local cache has recorded (``list`` never touches the network)."""
    return [str(info.store_path) async for info in store.pathinfos.list()]


async def assert_served_as_nix_wrote(store: Store, cache: NixCache, store_path: str) -> None:
    """The path is served and its castore content is the NAR Nix described."""
    info = await store.pathinfos.get(digest_of(store_path))
    assert info is not None, f"{store_path} not served"
    narinfo = cache.narinfos[store_path]
    assert info.store_path == narinfo.store_path
    nar_size, nar_sha256 = await calculate_nar(info.node, store.blobs, store.directories)
    assert (nar_size, nar_sha256) == (narinfo.nar_size, narinfo.nar_hash)
    assert info.narinfo.reference_names == tuple(str(r) for r in narinfo.references)
    assert info.narinfo.signatures == narinfo.signatures
    assert info.narinfo.ca == narinfo.ca
