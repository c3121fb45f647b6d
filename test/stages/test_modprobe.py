"""org.osbuild.modprobe: a modprobe.d file where the tree's kmod reads it."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.modprobe"
MERGED = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/usr/lib", "parents": True}]}},
          {"name": "org.osbuild.ln", "options": {"paths": [{"target": "usr/lib", "link_name": "/lib", "symbolic": True}]}}]
# A tree whose /lib is a directory of its own (/usr not merged), as Debian's before bookworm.
SPLIT = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/lib"}, {"path": "/usr/lib", "parents": True}]}}]
COMMANDS = [
    {"command": "blacklist", "modulename": "nouveau"},
    {"command": "install", "modulename": "floppy", "cmdline": "/bin/false"},
]
TEXT = "blacklist nouveau\ninstall floppy /bin/false\n"


def modprobe(filename: str, commands: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"filename": filename, "commands": commands}}


def test_merged_usr_gets_usr_lib(shared_store):
    changes = stage_changes(MERGED, [modprobe("disallow.conf", COMMANDS)], shared_store)
    assert_changes(changes, {"added": {
        "/usr/lib/modprobe.d": {"type": "dir", "mode": "0755"},
        "/usr/lib/modprobe.d/disallow.conf": {"text": TEXT, "mode": "0644", "uid": 0},
    }})


def test_split_usr_gets_lib(shared_store):
    changes = stage_changes(SPLIT, [modprobe("disallow.conf", COMMANDS)], shared_store)
    assert_changes(changes, {"added": {
        "/lib/modprobe.d": {"type": "dir"},
        "/lib/modprobe.d/disallow.conf": {"text": TEXT},
    }})


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "a.conf", "commands": COMMANDS, "directory": "/etc"}, ".stages[0].options"),
    ({"filename": "a.txt", "commands": COMMANDS}, ".stages[0].options.filename"),
    ({"filename": "../a.conf", "commands": COMMANDS}, ".stages[0].options.filename"),
    ({"filename": "a.conf", "commands": [{"command": "options", "modulename": "x"}]}, ".stages[0].options.commands[0]"),
    ({"filename": "a.conf", "commands": [{"command": "install", "modulename": "x"}]}, ".stages[0].options.commands[0]"),
    ({"filename": "a.conf", "commands": []}, ".stages[0].options.commands"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
