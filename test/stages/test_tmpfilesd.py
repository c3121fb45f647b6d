"""org.osbuild.tmpfilesd: a tmpfiles.d file, with "-" for columns left out before given ones."""

from __future__ import annotations

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.tmpfilesd"
BASE = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/usr/lib/tmpfiles.d", "parents": True}]}}]


def test_lines_and_placeholder_columns(shared_store):
    stage = {"name": STAGE, "options": {"filename": "example.conf", "config": [
        {"type": "x", "path": "/tmp/.sap*"},
        {"type": "w-", "path": "/proc/sys/vm/swappiness", "argument": "10"},
        {"type": "d", "path": "/tmp/.X11-unix", "mode": "1777", "user": "root", "group": "root", "age": "10d"},
        {"type": "d", "path": "/run/uscreens", "mode": "0755", "group": "screen"},
        {"type": "L+", "path": "/srv/my data", "argument": "/var/lib/data"},
    ]}}
    changes = stage_changes(BASE, [stage], shared_store)
    assert_changes(changes, {"added": {"/usr/lib/tmpfiles.d/example.conf": {"mode": "0644", "text": (
        "x /tmp/.sap*\n"
        "w- /proc/sys/vm/swappiness - - - - 10\n"
        "d /tmp/.X11-unix 1777 root root 10d\n"
        "d /run/uscreens 0755 - screen\n"
        'L+ "/srv/my data" - - - - /var/lib/data\n'
    )}}})


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "a.conf", "config": [{"type": "d", "path": "/a"}], "mode": "0644"}, ".stages[0].options"),
    ({"filename": "a.conf", "config": [{"type": "d", "path": "/a", "uid": 0}]}, ".stages[0].options.config[0]"),
    ({"filename": "a.conf", "config": [{"type": "y", "path": "/a"}]}, ".stages[0].options.config[0].type"),
    ({"filename": "a.conf", "config": [{"type": "d", "path": "/a", "mode": "755"}]}, ".stages[0].options.config[0].mode"),
    ({"filename": "a.conf", "config": [{"type": "f", "path": "/a", "argument": "x\nR /"}]},
     ".stages[0].options.config[0].argument"),
    ({"filename": "a", "config": [{"type": "d", "path": "/a"}]}, ".stages[0].options.filename"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
