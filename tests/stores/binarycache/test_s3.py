"""``s3://`` binary caches against an S3-compatible server on loopback (moto), Nix as the oracle."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import mounted, requires_fuse, run_tvixmount, tvixmount_command
from tests.nixcache import (
    NixCache,
    build_cache,
    copy_from_args,
    generate_key,
    key_args,
    narinfo_name,
    nix_hash,
    requires_nix,
)
from tests.s3server import S3Server, aws_credentials, requires_moto, s3_server
from tests.stores.binarycache.test_copy import nix_reads
from tvixmount import nixbase32

pytestmark = [requires_nix, requires_moto]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with aws_credentials(tmp_path_factory.mktemp("aws")), s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def nix_cache(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    workdir = tmp_path_factory.mktemp("s3cache")
    return build_cache(workdir, "xz", key=generate_key(workdir, "s3-source-1"))


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"cache-{secrets.token_hex(4)}"
    s3.create_bucket(name)
    return name


def test_copied_to_a_bucket_and_downloaded_nix_reads_it(
    s3: S3Server, bucket: str, nix_cache: NixCache, tmp_path: Path
):
    ours = generate_key(tmp_path, "s3-copy-1")
    referrer = nix_cache.paths[-1]
    done = run_tvixmount(
        "copy",
        *copy_from_args(nix_cache, tmp_path / "local"),
        "--to",
        s3.url(bucket, compression="zstd"),
        "--secret-key",
        ours.secret_file,
        "--json",
        referrer,
    )
    assert done.returncode == 0, done.stderr
    assert {entry["path"] for entry in json.loads(done.stdout)} == set(nix_cache.paths)
    downloaded = tmp_path / "downloaded"
    keys = s3.download_bucket(bucket, downloaded)
    assert "nix-cache-info" in keys
    narinfo_key = narinfo_name(referrer)
    head = s3.client().head_object(Bucket=bucket, Key=narinfo_key)
    assert head["ContentType"] == "text/x-nix-narinfo"
    chroot = tmp_path / "chroot"
    read = nix_reads(f"file://{downloaded}", chroot, [referrer], ours.public)
    assert read.returncode == 0, read.stderr
    tree = nix_cache.paths[0]
    assert nix_hash(chroot / tree.lstrip("/")) == nix_hash(nix_cache.trees[tree])


def test_nix_written_cache_in_a_bucket_reads_through_s3(
    s3: S3Server, bucket: str, nix_cache: NixCache, tmp_path: Path
):
    s3.upload_dir(nix_cache.dir, bucket)
    store = [
        "--store",
        s3.url(bucket),
        "--cache-dir",
        str(tmp_path / "local"),
        *key_args(nix_cache),
    ]
    for path in nix_cache.paths:
        ours = subprocess.run(
            tvixmount_command("nar", path, *store), capture_output=True, check=False
        )
        assert ours.returncode == 0, ours.stderr
        theirs = subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True)
        assert ours.stdout == theirs.stdout
    info = run_tvixmount("path-info", "--json", *store, *nix_cache.paths)
    assert info.returncode == 0, info.stderr
    listed = run_tvixmount("ls", nix_cache.paths[0], *store)
    assert listed.returncode == 0, listed.stderr
    assert "hello.txt" in listed.stdout
    # And out of the bucket again, by copy.
    dest = tmp_path / "dest"
    done = run_tvixmount(
        "copy", "--from", s3.url(bucket), *store[2:], "--to", f"file://{dest}", nix_cache.paths[-1]
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.glob("*.narinfo")) == sorted(
        narinfo_name(path) for path in nix_cache.paths
    )


@requires_fuse
def test_nix_written_cache_in_a_bucket_mounts_through_s3(
    s3: S3Server, bucket: str, nix_cache: NixCache, tmp_path: Path
):
    s3.upload_dir(nix_cache.dir, bucket)
    extra = ["--cache-dir", str(tmp_path / "local"), *key_args(nix_cache)]
    with mounted(s3.url(bucket), tmp_path / "mnt", *extra) as mnt:
        for path in nix_cache.paths:
            served = mnt.path / path.removeprefix("/nix/store/")
            assert nix_hash(served) == nixbase32.encode(nix_cache.narinfos[path].nar_hash)


def test_credentials_come_from_the_named_profile(s3: S3Server, nix_cache: NixCache, tmp_path: Path):
    name = f"profiled-{secrets.token_hex(4)}"
    s3.create_bucket(name)
    with aws_credentials(tmp_path / "aws", profile="ci"):
        url = s3.url(name, profile="ci")
        done = run_tvixmount(
            "copy",
            *copy_from_args(nix_cache, tmp_path / "local"),
            "--to",
            url,
            nix_cache.paths[0],
        )
        assert done.returncode == 0, done.stderr
        missing = run_tvixmount("copy", "--to", s3.url(name, profile="nope"), nix_cache.paths[0])
    assert missing.returncode == 1
    assert "nope" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_missing_bucket_is_one_clear_line(s3: S3Server, nix_cache: NixCache, tmp_path: Path):
    url = s3.url("no-such-bucket")
    for args in (
        ["copy", *copy_from_args(nix_cache, tmp_path / "a"), "--to", url, nix_cache.paths[0]],
        ["path-info", "--store", url, "--cache-dir", str(tmp_path / "b"), *key_args(nix_cache),
         nix_cache.paths[0]],
    ):  # fmt: skip
        done = run_tvixmount(*args)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert "no such bucket" in done.stderr


def test_unreachable_endpoint_is_one_clear_line(nix_cache: NixCache, tmp_path: Path):
    url = "s3://cache?endpoint=127.0.0.1:9&scheme=http&retries=0&timeout=2"
    done = run_tvixmount(
        "path-info", "--store", url, "--cache-dir", tmp_path / "local", nix_cache.paths[0]
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "cannot reach" in done.stderr


def test_without_credentials_requests_go_unsigned(
    s3: S3Server, bucket: str, nix_cache: NixCache, tmp_path: Path
):
    """A public bucket reads with no credentials anywhere in the chain."""
    s3.upload_dir(nix_cache.dir, bucket)
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    with aws_credentials(tmp_path / "aws", profile="someone-else"):
        done = run_tvixmount(
            "path-info", "--store", s3.url(bucket), "--cache-dir", tmp_path / "local",
            *key_args(nix_cache), *nix_cache.paths,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == set(nix_cache.paths)
