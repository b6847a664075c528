"""The TOML fixture spec: what it accepts, and one clear FILE:LINE error for what it does not."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tvixmount.errors import SpecError
from tvixmount.testing._toml_lines import LineIndex
from tvixmount.testing.spec import (
    DirectoryEntry,
    FileEntry,
    Generated,
    Literal,
    Ref,
    SourceFile,
    SymlinkEntry,
    Text,
    load_spec,
    parse_spec,
)


def spec_text(text: str) -> str:
    """Dedent, so line 1 of the spec is the first line of the literal."""
    return textwrap.dedent(text).lstrip("\n")


def error_of(text: str, base_dir: Path | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(spec_text(text), "spec.toml", base_dir)
    return info.value


def content_of(chunks_source: Generated) -> bytes:
    return b"".join(chunks_source.chunks(lambda _: ""))


# -- what a valid spec becomes ---------------------------------------------


def test_files_keys_become_a_sorted_directory_tree() -> None:
    spec = parse_spec(
        spec_text(
            """
            [[path]]
            name = "p"
            files."b/c" = { text = "c" }
            files."a" = { hex = "00ff" }
            """
        )
    )
    root = spec["p"].root
    assert root == DirectoryEntry(
        (
            (b"a", FileEntry(Literal(b"\x00\xff"))),
            (b"b", DirectoryEntry(((b"c", FileEntry(Text(("c",)))),))),
        )
    )


def test_entry_keys_on_the_path_table_make_a_single_file_path() -> None:
    spec = parse_spec('[[path]]\nname = "tool"\ntext = "x"\nexecutable = true\n')
    assert spec["tool"].root == FileEntry(Text(("x",)), executable=True)


def test_symlink_on_the_path_table_makes_a_single_symlink_path() -> None:
    spec = parse_spec('[[path]]\nname = "link"\nsymlink = "/etc/hostname"\n')
    assert spec["link"].root == SymlinkEntry(("/etc/hostname",))


def test_explicit_directory_entry_is_an_empty_directory() -> None:
    spec = parse_spec('[[path]]\nname = "p"\nfiles."share/man" = { directory = true }\n')
    assert spec["p"].root == DirectoryEntry(
        ((b"share", DirectoryEntry(((b"man", DirectoryEntry()),))),)
    )


def test_placeholder_splits_text_into_literal_and_reference() -> None:
    spec = parse_spec(
        '[[path]]\nname = "lib"\ntext = ""\n[[path]]\nname = "app"\ntext = "run @{lib}/x"\n'
    )
    assert spec["app"].root == FileEntry(Text(("run ", Ref("lib"), "/x")))


def test_double_at_escapes_a_literal_placeholder() -> None:
    spec = parse_spec('[[path]]\nname = "p"\ntext = "@@{not-a-ref}"\n')
    assert spec["p"].root == FileEntry(Text(("@{not-a-ref}",)))
    assert spec["p"].references == ()


def test_placeholder_mentions_become_references() -> None:
    spec = parse_spec(
        '[[path]]\nname = "lib"\ntext = ""\n[[path]]\nname = "app"\nsymlink = "@{lib}/bin"\n'
    )
    assert spec["app"].references == ("lib",)


def test_paths_are_ordered_dependencies_first() -> None:
    spec = parse_spec(
        spec_text(
            """
            [[path]]
            name = "app"
            references = ["lib"]
            text = ""
            [[path]]
            name = "lib"
            text = ""
            """
        )
    )
    assert [p.id for p in spec.paths] == ["lib", "app"]


def test_id_defaults_to_the_name() -> None:
    spec = parse_spec('[[path]]\nname = "hello-2.12"\ntext = ""\n')
    assert spec.paths[0].id == "hello-2.12"


def test_pinned_store_path_gives_the_name() -> None:
    spec = parse_spec(
        '[[path]]\nid = "a"\nstore_path = "/nix/store/' + "0" * 32 + '-test"\nhex = "0001"\n'
    )
    assert spec["a"].name == "test"
    assert spec["a"].pinned is not None
    assert str(spec["a"].pinned) == "0" * 32 + "-test"


def test_counter_pattern_reproduces_tvix_blob_b() -> None:
    assert content_of(Generated(len(fx.BLOB_B), "counter", period=255)) == fx.BLOB_B


def test_zeros_pattern_is_zero_bytes() -> None:
    assert content_of(Generated(3_000_000, "zeros")) == bytes(3_000_000)


def test_random_pattern_is_the_same_for_the_same_seed() -> None:
    assert content_of(Generated(2_500_000, "random", seed="s")) == content_of(
        Generated(2_500_000, "random", seed="s")
    )


def test_random_pattern_differs_between_seeds() -> None:
    assert content_of(Generated(64, "random", seed="a")) != content_of(
        Generated(64, "random", seed="b")
    )


def test_random_pattern_chunks_continue_one_stream() -> None:
    # A big file is generated in chunks; they must equal one long output.
    whole = content_of(Generated(3 << 20, "random", seed="x"))
    assert whole[: 1 << 20] != whole[1 << 20 : 2 << 20]
    assert content_of(Generated(1 << 20, "random", seed="x")) == whole[: 1 << 20]


def test_source_resolves_beside_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"\x01\x02")
    (tmp_path / "spec.toml").write_text('[[path]]\nname = "p"\nsource = "data.bin"\n')
    spec = load_spec(tmp_path / "spec.toml")
    assert spec["p"].root == FileEntry(SourceFile((tmp_path / "data.bin").resolve()))


# -- errors: one each, with file and line ----------------------------------


def test_unknown_reference_names_the_references_line() -> None:
    error = error_of(
        """
        [[path]]
        name = "app"
        text = ""
        references = ["missing"]
        """
    )
    assert (error.file, error.line) == ("spec.toml", 4)
    assert "unknown reference 'missing'" in error.reason


def test_unknown_placeholder_names_the_line_that_uses_it() -> None:
    error = error_of(
        """
        [[path]]
        name = "app"

        [path.files."bin/app"]
        text = "exec @{nope}/bin/x"
        """
    )
    assert error.line == 5
    assert "unknown reference 'nope'" in error.reason


def test_reference_cycle_is_reported_with_its_members() -> None:
    error = error_of(
        """
        [[path]]
        name = "a"
        references = ["b"]
        text = ""
        [[path]]
        name = "b"
        text = "@{a}"
        """
    )
    assert error.line == 3
    assert "reference cycle: a -> b -> a" in error.reason


def test_duplicate_names_name_both_lines() -> None:
    error = error_of(
        """
        [[path]]
        name = "hello"
        text = ""

        [[path]]
        name = "hello"
        text = "other"
        """
    )
    assert error.line == 6
    assert "duplicate store path name" in error.reason
    assert "first used at line 1" in error.reason


def test_duplicate_ids_are_an_error() -> None:
    error = error_of(
        '[[path]]\nid = "x"\nname = "a"\ntext = ""\n[[path]]\nid = "x"\nname = "b"\ntext = ""\n'
    )
    assert error.line == 6
    assert "duplicate id 'x'" in error.reason


def test_invalid_store_path_name_is_reported_on_its_line() -> None:
    error = error_of('[[path]]\ntext = ""\nname = "hello world"\n')
    assert error.line == 3
    assert "bad character ' '" in error.reason


def test_symlink_with_empty_target_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\nfiles."lib" = { symlink = "" }\n')
    assert error.line == 3
    assert error.reason == "symlink with an empty target"


def test_self_reference_by_placeholder_is_rejected() -> None:
    error = error_of('[[path]]\nname = "p"\n\ntext = "I am @{p}"\n')
    assert error.line == 4
    assert "self-references are not supported" in error.reason


def test_self_reference_in_references_is_rejected() -> None:
    error = error_of('[[path]]\nname = "p"\ntext = ""\nreferences = ["p"]\n')
    assert error.line == 4
    assert "refers to itself" in error.reason


def test_unknown_key_lists_the_allowed_ones() -> None:
    error = error_of('[[path]]\nname = "p"\n[path.files."a"]\ntext = ""\nmode = 420\n')
    assert error.line == 5
    assert "unknown key 'mode'" in error.reason
    assert "executable" in error.reason


def test_wrong_value_type_names_the_expected_type() -> None:
    error = error_of('[[path]]\nname = "p"\ntext = ""\nexecutable = "yes"\n')
    assert error.line == 4
    assert error.reason == "'executable' must be true or false, not a string"


def test_missing_source_file_is_an_error(tmp_path: Path) -> None:
    error = error_of('[[path]]\nname = "p"\nsource = "absent.bin"\n', tmp_path)
    assert error.line == 3
    assert "source file 'absent.bin' does not exist" in error.reason
    assert str(tmp_path / "absent.bin") in error.reason


def test_entry_with_two_kinds_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\nfiles."a" = { text = "", symlink = "b" }\n')
    assert error.line == 3
    assert "exactly one of" in error.reason


def test_files_inside_a_file_are_an_error() -> None:
    error = error_of(
        '[[path]]\nname = "p"\nfiles."a" = { text = "" }\nfiles."a/b" = { text = "" }\n'
    )
    assert error.line == 4
    assert "'a' is a file or symlink" in error.reason


def test_dot_dot_in_a_file_path_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\nfiles."a/../b" = { text = "" }\n')
    assert error.line == 3
    assert "bad file path 'a/../b'" in error.reason


def test_absolute_file_path_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\nfiles."/etc/x" = { text = "" }\n')
    assert "must be relative" in error.reason


def test_executable_symlink_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\nsymlink = "x"\nexecutable = true\n')
    assert error.line == 4
    assert "'executable' applies to files" in error.reason


def test_unknown_generate_pattern_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\ngenerate = { size = 1, pattern = "noise" }\n')
    assert error.line == 3
    assert "unknown pattern 'noise'" in error.reason


def test_files_and_a_single_file_together_are_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\ntext = ""\nfiles."a" = { text = "" }\n')
    assert "not both" in error.reason


def test_invalid_pinned_store_path_is_an_error() -> None:
    error = error_of('[[path]]\nstore_path = "not-a-store-path"\ntext = ""\n')
    assert error.line == 2
    assert "invalid store path" in error.reason


def test_name_that_differs_from_the_pin_is_an_error() -> None:
    error = error_of(f'[[path]]\nstore_path = "{"0" * 32}-test"\nname = "other"\ntext = ""\n')
    assert error.line == 3
    assert "differs from the pinned" in error.reason


def test_unterminated_placeholder_is_an_error() -> None:
    error = error_of('[[path]]\nname = "p"\ntext = "@{oops"\n')
    assert "unterminated placeholder" in error.reason


def test_invalid_toml_reports_tomls_line() -> None:
    error = error_of('[[path]]\nname = "p"\ntext = "unterminated\n')
    assert error.line == 3
    assert error.reason.startswith("invalid TOML")


def test_spec_without_paths_is_an_error() -> None:
    error = error_of("# nothing here\n")
    assert "no store paths" in error.reason


def test_error_message_starts_with_file_and_line() -> None:
    error = error_of('[[path]]\nname = "p"\nsymlink = ""\n')
    assert str(error) == "spec.toml:3: symlink with an empty target"


def test_multiline_string_content_does_not_confuse_line_numbers() -> None:
    error = error_of(
        '[[path]]\nname = "p"\ntext = """\n[[path]]\nname = "q"\n"""\nexecutable = 1\n'
    )
    assert error.line == 7


# -- the line index behind the errors ----------------------------------------


def test_line_index_addresses_array_of_tables_elements_by_index() -> None:
    index = LineIndex('[[path]]\nname = "a"\n\n[[path]]\nname = "b"\n')
    assert index.line_of(("path", 1, "name")) == 5


def test_line_index_finds_keys_of_nested_inline_tables() -> None:
    index = LineIndex('[[path]]\nx = 1\nfiles."a/b" = { generate = { size = 1, pattern = "z" } }\n')
    assert index.line_of(("path", 0, "files", "a/b", "generate", "pattern")) == 3


def test_line_index_places_subtables_in_the_last_array_element() -> None:
    index = LineIndex('[[path]]\n[[path]]\n[path.files."bin/x"]\ntext = ""\n')
    assert index.line_of(("path", 1, "files", "bin/x", "text")) == 4


def test_line_index_falls_back_to_the_nearest_known_ancestor() -> None:
    index = LineIndex('[[path]]\nname = "a"\n')
    assert index.line_of(("path", 0, "files", "unknown")) == 1


def test_line_index_ignores_headers_inside_multiline_strings() -> None:
    index = LineIndex("[[path]]\ntext = '''\n[[path]]\n'''\n[[path]]\nname = \"b\"\n")
    assert index.line_of(("path", 1, "name")) == 6


def test_line_index_decodes_escaped_quoted_keys() -> None:
    index = LineIndex('[t]\n"a\\"b" = 1\n')
    assert index.line_of(("t", 'a"b')) == 2
