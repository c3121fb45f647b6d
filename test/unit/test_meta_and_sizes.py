"""Module meta files that cannot be used, and sizes for --cache-max-size: one clear line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testlib import TEST_STAGE, Library, assert_one_line_error

from osbuild.main_cli import parse_size


def meta_path(lib: Library, name: str = TEST_STAGE) -> Path:
    return lib.root / "stages" / f"{name}.meta.json"


MANIFEST = {"stages": [{"name": TEST_STAGE, "options": {}}]}


def set_meta(lib: Library, meta: Any) -> None:
    meta_path(lib).write_text(json.dumps(meta))


def valid_meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"summary": "s", "description": ["d"], "schema": {"type": "object"}}
    meta.update(changes)
    return meta


@pytest.mark.parametrize(("meta", "words"), [
    ('{"summary": "s", "description": [', "invalid JSON"),
    (json.dumps({"description": ["d"]}), "'summary' is a required property"),
    (json.dumps(valid_meta(netwrk=True)), "'netwrk' was unexpected"),
    (json.dumps(valid_meta(network="yes")), "'yes' is not of type 'boolean'"),
    (json.dumps(valid_meta(capabilities=["CAP_SYS_MODULE"])), "CAP_SYS_MODULE"),
    (json.dumps(valid_meta(schema={"type": "objekt"})), "invalid options schema at .schema.type"),
    (json.dumps(valid_meta(schema={"type": "object", "required": "name"})), "invalid options schema at .schema.required"),
    (json.dumps(valid_meta(schema={"properties": {"p": {"type": "string", "pattern": "("}}})), "invalid options schema"),
])
def test_broken_meta_file_is_one_line_naming_it(lib: Library, tmp_path: Path, meta: str, words: str) -> None:
    meta_path(lib).write_text(meta)
    proc = lib.run("--store", str(tmp_path / "store"), manifest=MANIFEST, check=False)
    assert_one_line_error(proc, 2, str(meta_path(lib)), words)
    assert not (tmp_path / "store").exists()


def test_missing_meta_file(lib: Library, tmp_path: Path) -> None:
    meta_path(lib).unlink()
    proc = lib.run("--store", str(tmp_path / "store"), manifest=MANIFEST, check=False)
    assert_one_line_error(proc, 2, TEST_STAGE, "no meta file")


def test_broken_meta_of_an_unused_module_does_not_matter(lib: Library, tmp_path: Path) -> None:
    meta_path(lib, "org.osbuild.noop").write_text("not json")
    proc = lib.run("--store", str(tmp_path / "store"), manifest=MANIFEST)
    assert proc.returncode == 0


def test_list_modules_names_a_broken_meta_file(lib: Library) -> None:
    meta_path(lib).write_text("[]")
    proc = lib.run("--list-modules", check=False)
    assert_one_line_error(proc, 2, str(meta_path(lib)), "is not of type 'object'")


def test_list_modules_shows_summaries(lib: Library) -> None:
    out = lib.run("--list-modules").stdout
    assert f"test module {TEST_STAGE}" in out
    assert "org.osbuild.noop" in out and "org.osbuild.linux" in out
    # Format 2's kinds, which the engine makes itself, are listed with the rest.
    assert "inputs:\n" in out and "org.osbuild.tree" in out and "org.osbuild.loopback" in out and "org.osbuild.ext4" in out


def test_libdir_without_stages(tmp_path: Path, lib: Library) -> None:
    (tmp_path / "empty").mkdir()
    proc = lib.run("--libdir", str(tmp_path / "empty"), "--store", str(tmp_path / "store"), manifest=MANIFEST, check=False)
    assert_one_line_error(proc, 2, "has no stages/ directory")


# -- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    ("0", 0),
    ("1024", 1024),
    ("10k", 10 * 1024),
    ("500M", 500 * 1024**2),
    ("500MiB", 500 * 1024**2),
    ("500mb", 500 * 1024**2),
    ("2G", 2 * 1024**3),
    ("2 GiB", 2 * 1024**3),
    ("1T", 1024**4),
    ("unlimited", None),
    ("-1", None),
])
def test_size_parses(text: str, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "1.5G", "5X", "-5", "5 G B", "G"])
def test_bad_size_on_the_command_line(lib: Library, tmp_path: Path, text: str) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--cache-max-size", text, manifest=MANIFEST, check=False)
    assert_one_line_error(proc, 2, "--cache-max-size", "invalid size")
    assert not (tmp_path / "store").exists()
