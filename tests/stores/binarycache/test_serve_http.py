"""``tvixmount serve --http``: stock Nix 2.8 substitutes from it, as from any binary cache.

Every server is the real CLI in a subprocess on a loopback port; the
clients are real Nix (``nix copy``, ``nix store ls``), ``nix-store --dump``
and ``nix-hash`` are the oracles, and HTTP edge cases go over raw sockets so
no client library tidies the request first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import zstandard

from tests.grpc_serving import _READY, _await_ready, serving, stop
from tests.mounting import run_tvixmount, tvixmount_command
from tests.nixcache import (
    NIX_FLAGS,
    NixCache,
    build_cache,
    generate_key,
    key_args,
    make_tree,
    narinfo_name,
    nix_hash,
    requires_nix,
    serve_directory,
)
from tvixmount.castore.nodes import rename
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import StoreOptions, open_store

pytestmark = requires_nix

# Nix remembers narinfos per cache URL; loopback ports get reused between servers.
NO_NARINFO_CACHE = (
    "--option",
    "narinfo-cache-negative-ttl",
    "0",
    "--option",
    "narinfo-cache-positive-ttl",
    "0",
)


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr}")
    return done


@dataclass
class Key:
    secret_file: Path
    public: str


def nix_key(workdir: Path, name: str) -> Key:
    """A key pair the way the issue asks: ``nix key generate-secret``."""
    secret = _run("nix", *NIX_FLAGS, "key", "generate-secret", "--key-name", name).stdout
    secret_file = workdir / f"{name}.secret"
    secret_file.write_text(secret)
    public = subprocess.run(
        ["nix", *NIX_FLAGS, "key", "convert-secret-to-public"],
        input=secret,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Key(secret_file, public)


@dataclass
class HttpServed:
    urls: list[str]  # one per listener, in the order printed
    process: subprocess.Popen[str]
    log_file: Path

    @property
    def url(self) -> str:
        return self.urls[-1]

    def log(self) -> str:
        return self.log_file.read_text()


@contextlib.contextmanager
def serving_http(
    workdir: Path, *args: str | Path, listeners: int = 1, verbose: bool = False
) -> Iterator[HttpServed]:
    """``tvixmount serve --http 127.0.0.1:0 ARGS`` until the block ends (SIGTERM, reaped)."""
    log_file = workdir / f"serve-{os.urandom(4).hex()}.log"
    command = tvixmount_command(*(["-v"] if verbose else []), "serve", "--http", "127.0.0.1:0")
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [*command, *map(str, args)], stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        urls = [_await_ready(process, log_file)]
        # The other lines follow at once, often already in the pipe's read buffer
        # where select cannot see them; the timer only guards against a hang.
        watchdog = threading.Timer(30, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for _ in range(listeners - 1):
                ready = _READY.match(process.stdout.readline().strip())
                assert ready is not None, log_file.read_text()
                urls.append(ready[1])
        finally:
            watchdog.cancel()
        yield HttpServed(urls, process, log_file)
    finally:
        stop(process)


def nix_copy_from(
    url: str, dest: Path, store_path: str, *trusted: str
) -> subprocess.CompletedProcess[str]:
    return _run(
        "nix",
        *NIX_FLAGS,
        "copy",
        "--from",
        url,
        "--to",
        dest,
        store_path,
        "--option",
        "trusted-public-keys",
        " ".join(trusted),
        "--option",
        "require-sigs",
        "true",
        *NO_NARINFO_CACHE,
        check=False,
    )


def _exchange(url: str, request: bytes) -> bytes:
    """``request`` sent byte for byte; everything the server sends until it closes."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def raw_get(url: str, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """One request with ``target`` sent byte for byte; the status and the whole response."""
    data = _exchange(
        url, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    return int(data.split(b" ", 2)[1]), data


# -- the embedded store, with a tree imported by `tvixmount import` ------------------------


@dataclass
class Embedded:
    workdir: Path
    store: Path
    tree: Path
    store_path: str
    key: Key
    served: HttpServed

    @property
    def hash(self) -> str:
        return StorePath.parse(self.store_path).encoded_digest

    def narinfo(self) -> dict[str, str]:
        text = httpx.get(f"{self.served.url}/{self.hash}.narinfo").text
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

    def nar_url(self) -> str:
        return f"{self.served.url}/{self.narinfo()['URL']}"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    workdir = tmp_path_factory.mktemp("serve-http")
    tree = make_tree(workdir / "tree", os.urandom(8).hex(), busybox=True)
    store = workdir / "store"
    imported = run_tvixmount("import", tree, "--store", store)
    assert imported.returncode == 0, imported.stderr
    key = nix_key(workdir, "test-1")
    with serving_http(
        workdir, "--store", store, "--secret-key", key.secret_file, "--priority", "41"
    ) as served:
        yield Embedded(workdir, store, tree, imported.stdout.strip(), key, served)


def test_nix_copies_an_imported_path_with_its_signature_required(embedded: Embedded) -> None:
    dest = embedded.workdir / "chroot-embedded"
    copied = nix_copy_from(embedded.served.url, dest, embedded.store_path, embedded.key.public)
    assert copied.returncode == 0, copied.stderr
    copy = dest / embedded.store_path.lstrip("/")
    assert nix_hash(copy) == nix_hash(embedded.tree)


def test_the_narinfo_is_signed_with_the_secret_key(embedded: Embedded) -> None:
    fields = embedded.narinfo()
    assert fields["StorePath"] == embedded.store_path
    assert fields["Compression"] == "none"
    assert fields["NarHash"] == f"sha256:{nix_hash(embedded.tree)}"
    assert fields["Sig"].startswith("test-1:")
    assert fields["CA"] == f"fixed:r:sha256:{nix_hash(embedded.tree)}"


def test_nix_cache_info_advertises_the_priority(embedded: Embedded) -> None:
    response = httpx.get(f"{embedded.served.url}/nix-cache-info")
    assert response.status_code == 200
    assert response.text.splitlines() == [
        "StoreDir: /nix/store",
        "WantMassQuery: 1",
        "Priority: 41",
    ]


def test_the_nar_is_what_nix_store_dump_writes(embedded: Embedded) -> None:
    dump = _dump(embedded.tree)
    response = httpx.get(embedded.nar_url())
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(dump))
    assert response.content == dump


def test_the_zstd_nar_decompresses_to_the_nar(embedded: Embedded) -> None:
    url = embedded.nar_url().replace(".nar?", ".nar.zst?")
    response = httpx.get(url)
    assert response.status_code == 200
    reader = zstandard.ZstdDecompressor().stream_reader(response.content)
    assert reader.read() == _dump(embedded.tree)


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, None),
        ("bytes=-500", -500, None),
        ("bytes=1000-1000", 1000, 1001),
        ("bytes=65530-1500000", 65530, 1500001),  # across the writer's output chunks
        ("bytes=5-999999999", 5, None),
    ],
)
def test_a_byte_range_of_the_nar(embedded: Embedded, header: str, start: int, stop: int) -> None:
    dump = _dump(embedded.tree)
    response = httpx.get(embedded.nar_url(), headers={"Range": header})
    assert response.status_code == 206
    expected = dump[start:stop]
    assert response.content == expected
    first = start % len(dump)
    assert response.headers["content-range"] == (
        f"bytes {first}-{first + len(expected) - 1}/{len(dump)}"
    )


def test_a_range_past_the_end_is_416(embedded: Embedded) -> None:
    size = len(_dump(embedded.tree))
    response = httpx.get(embedded.nar_url(), headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"


def test_several_ranges_get_the_whole_nar(embedded: Embedded) -> None:
    response = httpx.get(embedded.nar_url(), headers={"Range": "bytes=0-1,5-6"})
    assert response.status_code == 200
    assert response.content == _dump(embedded.tree)


def test_head_answers_headers_only(embedded: Embedded) -> None:
    narinfo = httpx.get(f"{embedded.served.url}/{embedded.hash}.narinfo")
    head = httpx.head(f"{embedded.served.url}/{embedded.hash}.narinfo")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(narinfo.content))
    nar = httpx.head(embedded.nar_url())
    assert nar.status_code == 200
    assert nar.headers["content-length"] == str(len(_dump(embedded.tree)))
    assert httpx.head(f"{embedded.served.url}/{'0' * 32}.narinfo").status_code == 404


def test_unknown_paths_are_404(embedded: Embedded) -> None:
    url = embedded.served.url
    unknown = "0" * 32
    assert httpx.get(f"{url}/{unknown}.narinfo").status_code == 404
    assert httpx.get(f"{url}/{unknown}.ls").status_code == 404
    narhash = embedded.narinfo()["NarHash"].removeprefix("sha256:")
    assert httpx.get(f"{url}/nar/{narhash}.nar?hash={unknown}").status_code == 404
    assert httpx.get(f"{url}/nar/{'1' * 52}.nar?hash={embedded.hash}").status_code == 404
    assert httpx.get(f"{url}/nar/{narhash}.nar").status_code == 404
    assert httpx.get(f"{url}/index.html").status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        b"/../../../../etc/passwd",
        b"/nar/../../../../etc/passwd",
        b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        b"/nar%2f..%2f..%2f..%2fetc%2fpasswd",
        b"/nar/..%2f..%2fetc%2fpasswd",
        b"//etc/passwd",
        b"/nix-cache-info/../../etc/passwd",
        b"/\\..\\..\\etc\\passwd",
        b"/%00.narinfo",
        b"/\xff\xfe.narinfo",
        b"*",
    ],
)
def test_traversal_attempts_are_4xx(embedded: Embedded, target: bytes) -> None:
    status, response = raw_get(embedded.served.url, target)
    assert 400 <= status < 500
    assert b"root:" not in response


def test_other_methods_are_405(embedded: Embedded) -> None:
    status, response = raw_get(embedded.served.url, b"/nix-cache-info", b"PUT")
    assert status == 405
    assert b"\r\nallow: GET, HEAD\r\n" in response


def test_pipelined_requests_are_answered_in_order(embedded: Embedded) -> None:
    get = b"GET /%s HTTP/1.1\r\nHost: x\r\n%s\r\n"
    data = _exchange(
        embedded.served.url,
        get % (f"{embedded.hash}.narinfo".encode(), b"")
        + get % (b"nix-cache-info", b"")
        + get % (b"0" * 32 + b".narinfo", b"Connection: close\r\n"),
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"200", b"404"]
    assert data.index(b"StorePath: ") < data.index(b"StoreDir: ")


def test_an_http_1_0_client_gets_its_answer_and_the_connection_closes(
    embedded: Embedded,
) -> None:
    data = _exchange(embedded.served.url, b"GET /nix-cache-info HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"Priority: 41\n")


def test_a_request_that_never_ends_is_refused(embedded: Embedded) -> None:
    headers = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"x" * 1000) for i in range(100))
    data = _exchange(embedded.served.url, b"GET /nix-cache-info HTTP/1.1\r\n" + headers)
    assert data.startswith(b"HTTP/1.1 400 ")


def test_nix_store_ls_over_http_equals_tvixmount_ls(embedded: Embedded) -> None:
    nix = _run(
        "nix",
        *NIX_FLAGS,
        "store",
        "ls",
        "--store",
        embedded.served.url,
        "--json",
        "-R",
        embedded.store_path,
        *NO_NARINFO_CACHE,
    )
    ours = run_tvixmount("ls", "--json", "-R", embedded.store_path, "--store", embedded.store)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(nix.stdout) == json.loads(ours.stdout)


def test_the_ls_file_is_the_listing_nix_writes(embedded: Embedded) -> None:
    # The same tree added to Nix's own store has the same (content-addressed) path.
    assert _run("nix-store", "--add", embedded.tree).stdout.strip() == embedded.store_path
    cache = embedded.workdir / "nix-listing-cache"
    _run(
        "nix",
        *NIX_FLAGS,
        "copy",
        "--to",
        f"file://{cache}?compression=none&write-nar-listing=true",
        embedded.store_path,
    )
    written = json.loads((cache / f"{embedded.hash}.ls").read_text())
    served = httpx.get(f"{embedded.served.url}/{embedded.hash}.ls")
    assert served.status_code == 200
    assert served.json() == written


def test_a_grpc_store_is_served_too(embedded: Embedded, tmp_path: Path) -> None:
    with (
        serving(str(embedded.store), tmp_path / "grpc.log") as grpc_store,
        serving_http(
            tmp_path, "--store", grpc_store.url, "--secret-key", embedded.key.secret_file
        ) as served,
    ):
        dest = tmp_path / "chroot"
        copied = nix_copy_from(served.url, dest, embedded.store_path, embedded.key.public)
        assert copied.returncode == 0, copied.stderr
    assert nix_hash(dest / embedded.store_path.lstrip("/")) == nix_hash(embedded.tree)


# -- a closure served from another binary cache -------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    """A Nix-written cache whose narinfos lost their CA: Nix then insists on signatures."""
    workdir = tmp_path_factory.mktemp("serve-http-upstream")
    cache = build_cache(workdir, "xz", generate_key(workdir, "upstream-1"))
    for path in cache.paths:
        text = cache.narinfo_file(path).read_text()
        cache.rewrite_narinfo(
            path, "".join(line for line in text.splitlines(True) if not line.startswith("CA:"))
        )
    return cache


def serving_upstream(
    upstream: NixCache, workdir: Path, key: Key
) -> contextlib.AbstractContextManager[HttpServed]:
    """``serving_http`` of ``upstream`` (its key trusted), adding a signature with ``key``."""
    return serving_http(
        workdir,
        "--store",
        upstream.url,
        "--cache-dir",
        workdir / "cache",
        *key_args(upstream),
        "--secret-key",
        key.secret_file,
    )


def test_nix_copies_a_closure_served_from_another_cache(upstream: NixCache, tmp_path: Path) -> None:
    assert upstream.key is not None
    key = nix_key(tmp_path, "test-1")
    referrer = upstream.paths[-1]  # refers to the first tree
    with serving_upstream(upstream, tmp_path, key) as served:
        narinfo = httpx.get(f"{served.url}/{narinfo_name(referrer)}")
        signers = {
            line.split(":")[1].strip()
            for line in narinfo.text.splitlines()
            if line.startswith("Sig:")
        }
        assert signers == {"upstream-1", "test-1"}  # the upstream signature is kept
        dest = tmp_path / "chroot"
        copied = nix_copy_from(served.url, dest, referrer, key.public)
        assert copied.returncode == 0, copied.stderr
        for path in upstream.paths:
            assert nix_hash(dest / path.lstrip("/")) == nix_hash(path)


def test_an_untrusted_key_is_refused_by_nix(upstream: NixCache, tmp_path: Path) -> None:
    assert upstream.key is not None
    key = nix_key(tmp_path, "test-1")
    (tmp_path / "other").mkdir()
    impostor = nix_key(tmp_path / "other", "test-1")  # same name, other key
    path = upstream.paths[0]
    with serving_upstream(upstream, tmp_path, key) as served:
        refused = nix_copy_from(served.url, tmp_path / "chroot", path, impostor.public)
    assert refused.returncode != 0
    assert "lacks a valid signature" in refused.stderr
    assert not (tmp_path / "chroot" / path.lstrip("/")).exists()


def test_a_slow_path_does_not_hold_up_others(upstream: NixCache, tmp_path: Path) -> None:
    """One narinfo stuck upstream; another path is answered meanwhile."""
    assert upstream.key is not None
    slow, fast = (StorePath.parse(path).encoded_digest for path in upstream.paths[:2])
    answers: dict[str, int] = {}
    gate = threading.Event()
    with serve_directory(upstream.dir) as upstream_http:
        upstream_http.hold[f"{slow}.narinfo"] = gate
        try:
            with serving_http(
                tmp_path,
                "--store",
                upstream_http.url,
                "--cache-dir",
                tmp_path / "cache",
                "--trusted-public-key",
                upstream.key.public,
            ) as served:
                waiter = threading.Thread(
                    target=lambda: answers.setdefault(
                        "slow", httpx.get(f"{served.url}/{slow}.narinfo", timeout=60).status_code
                    )
                )
                waiter.start()
                assert httpx.get(f"{served.url}/{fast}.narinfo", timeout=60).status_code == 200
                assert "slow" not in answers
                gate.set()
                waiter.join()
                assert answers["slow"] == 200
        finally:
            gate.set()


# -- integrity, lifecycle ---------------------------------------------------------------


def test_a_nar_that_fails_its_narhash_breaks_the_transfer(
    embedded: Embedded, tmp_path: Path
) -> None:
    """A PathInfo whose NarHash the castore content does not match: no complete wrong NAR."""
    store_dir = tmp_path / "store"
    _run("cp", "-a", embedded.store, store_dir)
    lying = trio.run(_put_lying_pathinfo, store_dir, embedded.store_path)
    with serving_http(tmp_path, "--store", store_dir) as served:
        narinfo = httpx.get(f"{served.url}/{lying.encoded_digest}.narinfo").text
        url = next(
            line.split(": ", 1)[1] for line in narinfo.splitlines() if line.startswith("URL:")
        )
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{served.url}/{url}")
        with pytest.raises(httpx.RemoteProtocolError):  # the zstd frame never ends either
            httpx.get(f"{served.url}/{url.replace('.nar?', '.nar.zst?')}")
        # A range is checked against the whole NAR before its last byte goes out.
        short_range = httpx.get(f"{served.url}/{url}", headers={"Range": "bytes=0-99"})
        assert short_range.status_code == 500
        assert "does not match its NarHash" in short_range.text
        assert "does not match its NarHash" in served.log()


async def _put_lying_pathinfo(store_dir: Path, original: str) -> StorePath:
    """Another store path with the original's content but a NarHash one bit off."""
    store = open_store(str(store_dir), StoreOptions())
    try:
        info = await store.pathinfos.get(StorePath.parse(original).digest)
        assert info is not None
        lying = StorePath(os.urandom(20), "lying")
        wrong = bytes([info.narinfo.nar_sha256[0] ^ 1]) + info.narinfo.nar_sha256[1:]
        await store.pathinfos.put(
            PathInfo(
                rename(info.node, str(lying).encode()),
                (),
                NarInfo(info.narinfo.nar_size, wrong),
            )
        )
        return lying
    finally:
        await store.aclose()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly(embedded: Embedded, tmp_path: Path, sig: int) -> None:
    # The client keeps its connection alive while the server is told to stop.
    with serving_http(tmp_path, "--store", embedded.store) as served, httpx.Client() as client:
        assert client.get(f"{served.url}/nix-cache-info").status_code == 200
        assert stop(served.process, sig) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(served.process.pid, 0)


def test_grpc_and_http_share_one_store(embedded: Embedded, tmp_path: Path) -> None:
    with serving_http(
        tmp_path, "--listen", "127.0.0.1:0", "--store", embedded.store, listeners=2
    ) as served:
        grpc_url, http_url = served.urls
        assert grpc_url.startswith("grpc+http://127.0.0.1:")
        assert http_url.startswith("http://127.0.0.1:")
        listed = run_tvixmount("ls", embedded.store_path, "--store", grpc_url)
        assert listed.returncode == 0, listed.stderr
        assert httpx.get(f"{http_url}/{embedded.hash}.narinfo").status_code == 200


def test_an_access_log_line_per_request_only_with_v(embedded: Embedded, tmp_path: Path) -> None:
    for verbose in (False, True):
        with serving_http(tmp_path, "--store", embedded.store, verbose=verbose) as served:
            httpx.get(f"{served.url}/{embedded.hash}.narinfo")
            stop(served.process)
            logged = f"GET /{embedded.hash}.narinfo" in served.log()
        assert logged == verbose


def test_a_busy_port_is_one_line(embedded: Embedded) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_tvixmount("serve", "--http", f"127.0.0.1:{port}", "--store", embedded.store)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"tvixmount: error: cannot serve HTTP on '127.0.0.1:{port}': Address already in use"
    ]


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:99999", "127.0.0.1:"])
def test_a_bad_http_address_is_one_line(embedded: Embedded, bind: str) -> None:
    done = run_tvixmount("serve", "--http", bind, "--store", embedded.store)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"tvixmount: error: cannot serve HTTP on {bind!r}: expected HOST:PORT"
    ]


def _dump(tree: Path) -> bytes:
    return subprocess.run(
        ["nix-store", "--dump", str(tree)], capture_output=True, check=True
    ).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "127.0.0.1:0", "--secret-key", "/k"], "--secret-key and --priority apply"),
        (["--priority", "10"], "--secret-key and --priority apply to --http only"),
        (["--http", "127.0.0.1:0", "--writable"], "--writable applies to --listen (gRPC) only"),
        (["--http", "127.0.0.1:0", "--secret-key", "/no/such/key"], "cannot read secret key"),
    ],
)
def test_flags_that_do_not_fit_are_one_line(
    embedded: Embedded, args: list[str], message: str
) -> None:
    done = run_tvixmount("serve", *args, "--store", embedded.store)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("tvixmount: error: ") and message in line


def test_a_secret_key_that_is_not_one_is_one_line(embedded: Embedded, tmp_path: Path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text(embedded.key.public)  # a public key where the secret one belongs
    done = run_tvixmount("serve", "--http", "127.0.0.1:0", "--secret-key", bad)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("tvixmount: error: invalid ed25519 secret key 'test-1'")
