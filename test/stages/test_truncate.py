"""org.osbuild.truncate: sparse files of a given size, grown or cut, inside the tree."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, export_tree, stage_changes

STAGE = "org.osbuild.truncate"
ZEROS_1M = "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"


def base_stages() -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/var/log/big", "text": "0123456789"}]}}]


def truncate(filename: str, size: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"filename": filename, "size": size}}


def test_new_file_is_sparse_and_its_parents_are_made(shared_store):
    changes = stage_changes(base_stages(), [truncate("images/disk.img", "1M")], shared_store)
    assert_changes(changes, {"added": {
        "/images": {"type": "dir", "mode": "0755"},
        "/images/disk.img": {"type": "file", "size": 1048576, "sha256": ZEROS_1M, "mode": "0644", "uid": 0},
    }})
    tree = export_tree([*base_stages(), truncate("images/disk.img", "1M")], shared_store)
    assert os.stat(tree / "images/disk.img").st_blocks == 0


def test_existing_file_is_cut_or_grown(shared_store):
    cut = stage_changes(base_stages(), [truncate("/var/log/big", "4")], shared_store)
    assert_changes(cut, {"changed": {"/var/log/big": {"size": [10, 4], "lines": {"removed": ["0123456789"],
                                                                                 "added": ["0123"]}}}})
    grown = stage_changes(base_stages(), [truncate("/var/log/big", "+2")], shared_store)
    assert_changes(grown, {"changed": {"/var/log/big": {"size": [10, 12]}}})


def test_a_directory_is_refused(shared_store):
    report = build_failure([*base_stages(), truncate("/var/log", "1K")], shared_store)
    assert "error: /var/log is a directory" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "disk.img", "size": "1G", "sparse": True}, ".stages[0].options"),
    ({"filename": "disk.img", "size": 1024}, ".stages[0].options.size"),
    ({"filename": "disk.img", "size": "1 GB"}, ".stages[0].options.size"),
    ({"filename": "../disk.img", "size": "1G"}, ".stages[0].options.filename"),
    ({"size": "1G"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
