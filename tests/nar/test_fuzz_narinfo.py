"""Hostile narinfos: random text and mutated valid narinfos give a Narinfo or NarinfoError.

A binary cache is untrusted input: never another exception, never a hang
(hypothesis' per-example deadline; a whole 1 MiB narinfo, the most the
binary cache fetches, parses in well under a second).
"""

from __future__ import annotations

import base64
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvixmount import nixbase32
from tvixmount.errors import NarinfoError
from tvixmount.nar.narinfo import _SINGLE_FIELDS, Narinfo

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _hash(size: int) -> str:
    return nixbase32.encode(bytes(range(size)))


VALID = (
    f"StorePath: /nix/store/{_hash(20)}-hello-2.12.1\n"
    f"URL: nar/{_hash(32)}.nar.xz\n"
    "Compression: xz\n"
    f"FileHash: sha256:{_hash(32)}\n"
    "FileSize: 50264\n"
    f"NarHash: sha256:{_hash(32)}\n"
    "NarSize: 226560\n"
    f"References: {_hash(20)}-hello-2.12.1 {'1' * 32}-glibc-2.37-8\n"
    f"Deriver: {'2' * 32}-hello-2.12.1.drv\n"
    "System: x86_64-linux\n"
    f"Sig: cache.nixos.org-1:{base64.b64encode(bytes(64)).decode()}\n"
    f"CA: fixed:r:sha256:{_hash(32)}\n"
)

FIELDS = (*_SINGLE_FIELDS, "Sig")


def parse(text: str | bytes) -> Narinfo | None:
    try:
        return Narinfo.parse(text, source="fuzz")
    except NarinfoError:
        return None


def test_the_valid_narinfo_parses() -> None:
    info = parse(VALID)
    assert info is not None
    assert info.nar_size == 226560


@FUZZ
@given(st.text(max_size=600))
def test_random_text_gives_narinfo_or_narinfo_error(text: str) -> None:
    parse(text)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_give_narinfo_or_narinfo_error(data: bytes) -> None:
    parse(data)


values = st.text(max_size=80) | st.from_regex(
    r"[a-z0-9]{0,8}[:\-][0-9a-zA-Z+/=]{0,90}", fullmatch=True
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=16))
def test_known_fields_with_random_values_give_narinfo_or_narinfo_error(
    fields: list[tuple[str, str]],
) -> None:
    parse("".join(f"{key}: {value}\n" for key, value in fields))


@st.composite
def mutated_narinfos(draw: st.DrawFn) -> str:
    """The valid narinfo with a line dropped, doubled or given another value, or a char changed."""
    lines = VALID.splitlines(keepends=True)
    at = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["drop", "double", "value", "char"]))
    if kind == "drop":
        del lines[at]
    elif kind == "double":
        lines.insert(at, lines[at])
    elif kind == "value":
        key = lines[at].partition(":")[0]
        lines[at] = f"{key}: {draw(values)}\n"
    else:
        text = "".join(lines)
        pos = draw(st.integers(0, len(text) - 1))
        return text[:pos] + draw(st.characters()) + text[pos + 1 :]
    return "".join(lines)


@FUZZ
@given(mutated_narinfos())
def test_mutated_valid_narinfo_gives_narinfo_or_narinfo_error(text: str) -> None:
    parse(text)


def _seconds_to_parse(text: str) -> float:
    started = time.monotonic()
    parse(text)
    return time.monotonic() - started


def test_a_megabyte_of_signatures_parses_quickly() -> None:
    signature = "Sig: k{}:" + base64.b64encode(os.urandom(64)).decode() + "\n"
    text = VALID + "".join(signature.format(i) for i in range(10_000))
    assert len(text) > 900_000
    assert _seconds_to_parse(text) < 1.0


def test_a_megabyte_long_size_is_an_error_not_a_hang() -> None:
    text = VALID.replace("NarSize: 226560", "NarSize: " + "9" * 1_000_000)
    assert parse(text) is None
    assert _seconds_to_parse(text) < 1.0
