"""org.osbuild.gzip, org.osbuild.xz, org.osbuild.zstd: one file of the tree compressed into another (format 1)."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, export_tree, stage_changes

# Text that compresses, so that a test can tell the levels apart.
CONTENT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(2000))


def base_stages() -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/srv/image.raw", "text": CONTENT}]}}]


def decompress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "xz":
        return lzma.decompress(data)
    return subprocess.run(["zstd", "-d", "--stdout"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize(("kind", "filename"), [("gzip", "/srv/image.raw.gz"), ("xz", "out/image.xz"),
                                                ("zstd", "/srv/image.zst")])
def test_compressed_file_is_added_and_the_original_kept(shared_store, kind, filename):
    stage = {"name": f"org.osbuild.{kind}", "options": {"path": "/srv/image.raw", "filename": filename}}
    changes = stage_changes(base_stages(), [stage], shared_store)
    path = "/" + filename.lstrip("/")
    added = {path: {"type": "file", "mode": "0644", "uid": 0, "gid": 0}}
    if path.startswith("/out/"):
        added["/out"] = {"type": "dir", "mode": "0755"}
    assert_changes(changes, {"added": added})
    data = (export_tree([*base_stages(), stage], shared_store) / path.lstrip("/")).read_bytes()
    assert decompress(kind, data) == CONTENT.encode()
    assert len(data) < len(CONTENT) / 5


def test_gzip_level_and_a_header_without_name_or_time(shared_store):
    fast = {"name": "org.osbuild.gzip", "options": {"path": "/srv/image.raw", "filename": "/fast.gz"}}
    small = {"name": "org.osbuild.gzip", "options": {"path": "/srv/image.raw", "filename": "/small.gz", "level": 9}}
    tree = export_tree([*base_stages(), fast, small], shared_store)
    fast_bytes, small_bytes = (tree / "fast.gz").read_bytes(), (tree / "small.gz").read_bytes()
    assert len(small_bytes) < len(fast_bytes)
    # Byte 3 holds the flags (no FNAME), bytes 4-7 the time (zero).
    assert fast_bytes[3] == 0 and fast_bytes[4:8] == b"\0\0\0\0"
    assert gzip.decompress(small_bytes) == CONTENT.encode()


def test_output_replaces_a_symlink_instead_of_writing_through_it(shared_store):
    base = [*base_stages(), {"name": "org.osbuild.ln", "options": {"paths": [
        {"target": "/srv/image.raw", "link_name": "tree:///out.xz", "symbolic": True}]}}]
    stage = {"name": "org.osbuild.xz", "options": {"path": "/srv/image.raw", "filename": "/out.xz"}}
    changes = stage_changes(base, [stage], shared_store)
    assert_changes(changes, {"changed": {"/out.xz": {"type": ["symlink", "file"]}}})


def test_a_missing_source_fails(shared_store):
    report = build_failure([*base_stages(), {"name": "org.osbuild.zstd",
                                             "options": {"path": "/srv/none", "filename": "/x.zst"}}], shared_store)
    assert "error: /srv/none is not a file in the tree" in report


@pytest.mark.parametrize(("stage", "options", "path"), [
    ("org.osbuild.gzip", {"path": "/a", "filename": "a.gz", "level": 10}, ".stages[0].options.level"),
    ("org.osbuild.gzip", {"path": "/a", "filename": "a.gz", "keep": True}, ".stages[0].options"),
    ("org.osbuild.xz", {"path": "/a", "filename": "a.xz", "level": 1}, ".stages[0].options"),
    ("org.osbuild.xz", {"path": "a", "filename": "a.xz"}, ".stages[0].options.path"),
    ("org.osbuild.zstd", {"path": "/a", "filename": "../a.zst"}, ".stages[0].options.filename"),
    ("org.osbuild.zstd", {"filename": "a.zst"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, stage, options, path):
    assert_rejected(stage, options, path, shared_store)
