"""org.osbuild.copy: files from the manifest, as text or base64, with mode and owner; never outside the tree."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.copy"
BINARY = bytes(range(256)) * 4


def base_stages() -> list[dict[str, Any]]:
    """A tree with /etc/motd and a masked unit (a symlink to /dev/null, outside the tree)."""
    return [
        {"name": STAGE, "options": {"files": [{"path": "/etc/motd", "text": "old\n"}]}},
        {"name": "org.osbuild.systemd", "options": {"masked_services": ["gone.service"]}},
    ]


def copy(*files: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"files": list(files)}}


def test_copy_text_and_binary_files(shared_store):
    stage = copy(
        {"path": "/etc/issue", "text": "Welcome\n"},
        {"path": "/usr/local/bin/hello", "text": "#!/bin/sh\necho hello\n", "mode": 0o755},
        {"path": "/srv/data/blob", "base64": base64.b64encode(BINARY).decode(), "mode": 0o600, "uid": 1000, "gid": 100},
    )
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/etc/issue": {"type": "file", "mode": "0644", "uid": 0, "gid": 0, "text": "Welcome\n"},
        "/usr": {"type": "dir", "mode": "0755"},
        "/usr/local": {"type": "dir", "mode": "0755"},
        "/usr/local/bin": {"type": "dir", "mode": "0755"},
        "/usr/local/bin/hello": {"type": "file", "mode": "0755", "text": "#!/bin/sh\necho hello\n"},
        "/srv": {"type": "dir", "mode": "0755", "uid": 0},
        "/srv/data": {"type": "dir", "mode": "0755", "uid": 0},
        "/srv/data/blob": {"type": "file", "mode": "0600", "uid": 1000, "gid": 100, "size": len(BINARY),
                           "sha256": hashlib.sha256(BINARY).hexdigest()},
    }})


def test_copy_replaces_files_and_symlinks(shared_store):
    stage = copy({"path": "/etc/motd", "text": "new\n", "mode": 0o640},
                 {"path": "/etc/systemd/system/gone.service", "text": "[Unit]\n"})
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"changed": {
        "/etc/motd": {"mode": ["0644", "0640"], "lines": {"removed": ["old"], "added": ["new"]}},
        "/etc/systemd/system/gone.service": {"type": ["symlink", "file"], "target": ["/dev/null", None]},
    }})


def test_setuid_bit_survives_the_owner_change(shared_store):
    stage = copy({"path": "/usr/bin/tool", "text": "#!/bin/sh\n", "mode": 0o4755, "uid": 0, "gid": 50})
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert changes["added"]["/usr/bin/tool"]["mode"] == "4755"
    assert changes["added"]["/usr/bin/tool"]["gid"] == 50


def test_paths_that_leave_the_tree_are_refused(shared_store):
    report = build_failure([*base_stages(), copy({"path": "/../../etc/passwd", "text": "x"})], shared_store)
    assert "error: path '/../../etc/passwd' leaves the tree" in report
    report = build_failure([*base_stages(), copy({"path": "/etc/systemd/system/gone.service/x", "text": "x"})], shared_store)
    assert "error: path '/etc/systemd/system/gone.service/x' leaves the tree through a symlink" in report


def test_copy_onto_a_directory_fails(shared_store):
    report = build_failure([*base_stages(), copy({"path": "/etc", "text": "x"})], shared_store)
    assert "error: /etc is a directory" in report


def test_invalid_base64_fails_in_one_line(shared_store):
    report = build_failure([*base_stages(), copy({"path": "/etc/blob", "base64": "not base64!"})], shared_store)
    assert "error: /etc/blob: invalid base64" in report
    assert "Traceback" not in report


@pytest.mark.parametrize(("options", "path"), [
    ({"files": [{"path": "/a", "text": "x", "owner": "root"}]}, ".stages[0].options.files[0]"),
    ({"files": [{"path": "/a", "text": "x"}], "directories": []}, ".stages[0].options"),
    ({"files": [{"path": "/a", "text": "x", "mode": "0644"}]}, ".stages[0].options.files[0].mode"),
    ({"files": [{"path": "/a", "text": "x", "uid": -1}]}, ".stages[0].options.files[0].uid"),
    ({"files": [{"path": "/a", "text": "x", "base64": "eA=="}]}, ".stages[0].options.files[0]"),
    ({"files": [{"path": "/a"}]}, ".stages[0].options.files[0]"),
    ({"files": [{"path": "a", "text": "x"}]}, ".stages[0].options.files[0].path"),
    ({"files": [{"path": "/a", "text": 1}]}, ".stages[0].options.files[0].text"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
