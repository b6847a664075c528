"""The pytest plugin, used the way an outside project would: a pytester run of example tests."""

from __future__ import annotations

import os
import textwrap

import pytest

from tvixmount.fs.mounttable import is_mounted, tvixmount_mounts
from tvixmount.storepath import StorePath

pytest_plugins = ["pytester"]

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse"), reason="mounting needs /dev/fuse"
)
requires_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="a private /nix/store mount needs root and /dev/fuse",
)

# An outside project's fixture store: a script that finds its library by absolute store path.
STORE_SPEC = """
[[path]]
id = "lib"
name = "greeting-lib-1.0"
files."lib/greeting.sh" = { text = "greeting() { echo 'Hello, fixture!'; }\\n" }

[[path]]
id = "hello"
name = "hello-1.0"

[path.files."bin/hello"]
executable = true
text = \"\"\"#!/bin/sh
. @{lib}/lib/greeting.sh
greeting
\"\"\"
"""


def example(pytester: pytest.Pytester, tests: str) -> None:
    """An outside project: a spec beside its test file, nothing from tvixmount's own tests."""
    pytester.makefile(".toml", store=STORE_SPEC)
    pytester.makepyfile(
        test_example="import subprocess, sys\nfrom pathlib import Path\n\n"
        'SPEC = Path(__file__).parent / "store.toml"\n\n' + textwrap.dedent(tests)
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess, so the plugin is loaded through its pytest11 entry point.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args, timeout=300)


def test_built_store_fixture_gives_store_paths_and_a_store_url(pytester: pytest.Pytester) -> None:
    example(
        pytester,
        """
        def test_built(tvixmount_fixture_store):
            store = tvixmount_fixture_store(SPEC)
            assert store["hello"].startswith("/nix/store/")
            assert store["hello"].endswith("-hello-1.0")
            listed = subprocess.run(
                [sys.executable, "-m", "tvixmount", "path-info", store["hello"],
                 "--store", store.url],
                capture_output=True, text=True, check=True,
            )
            assert store.basename("hello") in listed.stdout
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_built_store_fixture_accepts_spec_text(pytester: pytest.Pytester) -> None:
    example(
        pytester,
        """
        def test_text(tvixmount_fixture_store):
            store = tvixmount_fixture_store('[[path]]\\nname = "note"\\ntext = "hi"\\n')
            assert store["note"].endswith("-note")
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_bad_spec_fails_the_test_with_file_and_line(pytester: pytest.Pytester) -> None:
    example(
        pytester,
        """
        def test_bad(tvixmount_fixture_store):
            tvixmount_fixture_store('[[path]]\\nname = "x"\\nsymlink = ""\\n')
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SpecError: <spec text>:3: symlink with an empty target*"])


@requires_fuse
def test_mounted_store_fixture_serves_the_spec_files(pytester: pytest.Pytester) -> None:
    example(
        pytester,
        """
        import os

        def test_mounted(tvixmount_mounted_store):
            mounted = tvixmount_mounted_store(SPEC)
            script = mounted.path("hello") / "bin" / "hello"
            assert script.read_text().startswith("#!/bin/sh")
            assert os.access(script, os.X_OK)
            assert sorted(os.listdir(mounted.mountpoint)) == sorted(
                [mounted.store.basename("hello"), mounted.store.basename("lib")]
            )
        """,
    )
    run(pytester).assert_outcomes(passed=1)


@requires_fuse
def test_mounted_store_is_unmounted_when_the_test_fails(pytester: pytest.Pytester) -> None:
    record = pytester.path / "mountpoint.txt"
    example(
        pytester,
        f"""
        def test_fails_while_mounted(tvixmount_mounted_store):
            mounted = tvixmount_mounted_store(SPEC)
            Path({str(record)!r}).write_text(str(mounted.mountpoint))
            assert False, "the test fails with the store mounted"
        """,
    )
    run(pytester).assert_outcomes(failed=1)
    mountpoint = record.read_text()
    assert not is_mounted(mountpoint)
    assert mountpoint not in tvixmount_mounts()


@requires_namespace
def test_private_nix_store_runs_an_executable_by_absolute_store_path(
    pytester: pytest.Pytester,
) -> None:
    example(
        pytester,
        """
        def test_run(tvixmount_fixture_store, tvixmount_nix_store_run):
            store = tvixmount_fixture_store(SPEC)
            result = tvixmount_nix_store_run(store, [store["hello"] + "/bin/hello"])
            assert result.returncode == 0, result.stderr
            assert result.stdout == "Hello, fixture!\\n"
        """,
    )
    run(pytester).assert_outcomes(passed=1)


@requires_namespace
def test_private_nix_store_shows_only_the_fixture_and_leaves_the_host_alone(
    pytester: pytest.Pytester,
) -> None:
    host_device = os.stat("/nix/store").st_dev
    listing = pytester.path / "listing.txt"
    example(
        pytester,
        f"""
        def test_listing(tvixmount_nix_store_run):
            result = tvixmount_nix_store_run(SPEC, ["ls", "/nix/store"])
            Path({str(listing)!r}).write_text(result.stdout)
            assert result.returncode == 0
        """,
    )
    run(pytester).assert_outcomes(passed=1)
    names = [StorePath.parse(basename).name for basename in listing.read_text().split()]
    assert sorted(names) == ["greeting-lib-1.0", "hello-1.0"]
    # Other processes may change the host's store meanwhile, so compare what is
    # ours: none of the fixture's paths, and the same filesystem under /nix/store.
    assert not set(os.listdir("/nix/store")) & set(listing.read_text().split())
    assert os.stat("/nix/store").st_dev == host_device
    assert not is_mounted("/nix/store")


@requires_namespace
def test_private_nix_store_passes_the_exit_status_through(pytester: pytest.Pytester) -> None:
    example(
        pytester,
        """
        def test_status(tvixmount_nix_store_run):
            assert tvixmount_nix_store_run(SPEC, ["sh", "-c", "exit 3"]).returncode == 3
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_private_nix_store_skips_with_a_reason_when_not_root(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import os
        import pytest

        @pytest.fixture(autouse=True)
        def not_root(monkeypatch):
            monkeypatch.setattr(os, "geteuid", lambda: 1000)
        """
    )
    example(
        pytester,
        """
        def test_needs_root(tvixmount_nix_store_run):
            tvixmount_nix_store_run(SPEC, ["true"])
        """,
    )
    result = run(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*a private /nix/store mount needs root*"])
