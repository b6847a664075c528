"""Reading Nix's configuration as Nix does: files, XDG dirs, NIX_CONFIG, include, extra-."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvixmount.errors import NixConfigError
from tvixmount.nixconf import DEFAULT_TRUSTED_PUBLIC_KEYS, config_files, read_nix_config


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose every config location is under tmp_path (and empty)."""
    return {
        "HOME": str(tmp_path / "home"),
        "NIX_CONF_DIR": str(tmp_path / "etc-nix"),
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg1") + ":" + str(tmp_path / "xdg2"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_without_any_file_the_defaults_are_nixs(env: dict[str, str]):
    config = read_nix_config(env)
    assert config.trusted_public_keys == DEFAULT_TRUSTED_PUBLIC_KEYS
    assert config.require_sigs is True
    assert config.netrc_file == Path(env["NIX_CONF_DIR"]) / "netrc"


def test_system_file_sets_keys_and_require_sigs(env: dict[str, str]):
    write(
        Path(env["NIX_CONF_DIR"]) / "nix.conf",
        "# a comment\ntrusted-public-keys = a:AAA b:BBB  # trailing\nrequire-sigs = false\n",
    )
    config = read_nix_config(env)
    assert config.trusted_public_keys == ("a:AAA", "b:BBB")
    assert config.require_sigs is False
    assert config.require_sigs_source == f"{env['NIX_CONF_DIR']}/nix.conf:3"


def test_extra_appends_to_the_default(env: dict[str, str]):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "extra-trusted-public-keys = mine:KEY\n")
    assert read_nix_config(env).trusted_public_keys == (*DEFAULT_TRUSTED_PUBLIC_KEYS, "mine:KEY")


def test_files_apply_in_nixs_order_later_wins(env: dict[str, str]):
    assert [str(p) for p in config_files(env)] == [
        f"{env['NIX_CONF_DIR']}/nix.conf",
        f"{env['XDG_CONFIG_DIRS'].split(':')[1]}/nix/nix.conf",
        f"{env['XDG_CONFIG_DIRS'].split(':')[0]}/nix/nix.conf",
        f"{env['XDG_CONFIG_HOME']}/nix/nix.conf",
    ]
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "trusted-public-keys = system:K\n")
    write(Path(env["XDG_CONFIG_DIRS"].split(":")[1]) / "nix/nix.conf", "require-sigs = false\n")
    write(Path(env["XDG_CONFIG_DIRS"].split(":")[0]) / "nix/nix.conf", "require-sigs = true\n")
    write(
        Path(env["XDG_CONFIG_HOME"]) / "nix/nix.conf",
        "extra-trusted-public-keys = user:K\n",
    )
    config = read_nix_config(env)
    assert config.trusted_public_keys == ("system:K", "user:K")
    assert config.require_sigs is True


def test_xdg_config_home_defaults_to_dot_config(env: dict[str, str]):
    del env["XDG_CONFIG_HOME"]
    write(Path(env["HOME"]) / ".config/nix/nix.conf", "trusted-public-keys = home:K\n")
    assert read_nix_config(env).trusted_public_keys == ("home:K",)


def test_nix_user_conf_files_replace_the_xdg_files(env: dict[str, str], tmp_path: Path):
    write(Path(env["XDG_CONFIG_HOME"]) / "nix/nix.conf", "trusted-public-keys = xdg:K\n")
    listed = write(tmp_path / "listed.conf", "trusted-public-keys = listed:K\n")
    env["NIX_USER_CONF_FILES"] = str(listed)
    assert read_nix_config(env).trusted_public_keys == ("listed:K",)


def test_nix_config_variable_is_applied_last(env: dict[str, str]):
    write(Path(env["XDG_CONFIG_HOME"]) / "nix/nix.conf", "trusted-public-keys = file:K\n")
    env["NIX_CONFIG"] = "extra-trusted-public-keys = env:K\nnetrc-file = /run/netrc\n"
    config = read_nix_config(env)
    assert config.trusted_public_keys == ("file:K", "env:K")
    assert config.netrc_file == Path("/run/netrc")


def test_include_is_relative_to_the_including_file(env: dict[str, str]):
    conf_dir = Path(env["NIX_CONF_DIR"])
    write(conf_dir / "nix.conf", "include keys.conf\nextra-trusted-public-keys = after:K\n")
    write(conf_dir / "keys.conf", "trusted-public-keys = included:K\n")
    assert read_nix_config(env).trusted_public_keys == ("included:K", "after:K")


def test_optional_include_of_a_missing_file_is_ignored(env: dict[str, str]):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "!include absent.conf\nrequire-sigs = no\n")
    assert read_nix_config(env).require_sigs is False


def test_include_of_a_missing_file_is_an_error(env: dict[str, str]):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "\ninclude absent.conf\n")
    with pytest.raises(NixConfigError, match=r"nix.conf:2: included file .*absent.conf not found"):
        read_nix_config(env)


def test_a_file_including_itself_stops(env: dict[str, str]):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "include nix.conf\n")
    with pytest.raises(NixConfigError, match="nest deeper"):
        read_nix_config(env)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("trusted-public-keys a:AAA\n", "illegal configuration line"),
        ("include\n", "syntax error"),
        ("require-sigs = maybe\n", "not true or false"),
    ],
)
def test_bad_lines_are_errors_naming_file_and_line(env: dict[str, str], text: str, reason: str):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", text)
    with pytest.raises(NixConfigError, match=reason) as caught:
        read_nix_config(env)
    assert f"{env['NIX_CONF_DIR']}/nix.conf:1" in str(caught.value)


def test_settings_tvixmount_does_not_use_are_ignored(env: dict[str, str]):
    write(Path(env["NIX_CONF_DIR"]) / "nix.conf", "sandbox = false\nsubstituters =\n")
    assert read_nix_config(env).require_sigs is True
