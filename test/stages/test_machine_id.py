"""org.osbuild.machine-id: first-boot states, and Debian's D-Bus copy of the id."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.machine-id"
BAKED_ID = "8f1c5f0e4a7d4a4f9a3b2c1d0e9f8a7b\n"


def tree(debian: bool) -> list[dict[str, Any]]:
    """An id baked into the image, in /etc and in D-Bus's copy (as dbus-uuidgen --ensure leaves it)."""
    files = [{"path": "/etc/machine-id", "text": BAKED_ID, "mode": 0o444},
             {"path": "/var/lib/dbus/machine-id", "text": BAKED_ID}]
    if debian:
        files.append({"path": "/etc/debian_version", "text": "12.5\n"})
    return [{"name": "org.osbuild.copy", "options": {"files": files}}]


def machine_id(state: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"first-boot": state}}


def test_yes_and_no_leave_no_id_and_keep_the_mode(shared_store):
    first = stage_changes(tree(debian=False), [machine_id("yes")], shared_store)
    # Not Debian: D-Bus's copy is someone else's business.
    assert_changes(first, {"changed": {"/etc/machine-id": {"lines": {"removed": [BAKED_ID.strip()],
                                                                     "added": ["uninitialized"]}}}})
    empty = stage_changes(tree(debian=False), [machine_id("no")], shared_store)
    assert_changes(empty, {"changed": {"/etc/machine-id": {"size": [33, 0]}}})


def test_a_new_file_is_read_only(shared_store):
    changes = stage_changes([], [machine_id("yes")], shared_store)
    assert_changes(changes, {"added": {"/etc": {"type": "dir"},
                                       "/etc/machine-id": {"text": "uninitialized\n", "mode": "0444", "uid": 0}}})


def test_debian_dbus_copy_becomes_a_link(shared_store):
    changes = stage_changes(tree(debian=True), [machine_id("no")], shared_store)
    assert_changes(changes, {"changed": {
        "/etc/machine-id": {"size": [33, 0]},
        "/var/lib/dbus/machine-id": {"type": ["file", "symlink"], "target": [None, "/etc/machine-id"]},
    }})


def test_preserve(shared_store):
    assert_changes(stage_changes(tree(debian=True), [machine_id("preserve")], shared_store), {})
    report = build_failure([machine_id("preserve")], shared_store)
    assert "error: /etc/machine-id cannot be preserved: the tree has none" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"first-boot": "yes", "dbus": True}, ".stages[0].options"),
    ({"first-boot": True}, ".stages[0].options.first-boot"),
    ({"first-boot": "maybe"}, ".stages[0].options.first-boot"),
    ({}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
