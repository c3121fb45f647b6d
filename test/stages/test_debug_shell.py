"""org.osbuild.debug-shell: an early root shell on a tty, as a unit wanted by sysinit.target."""

from __future__ import annotations

import subprocess

import pytest
from conftest import assert_changes, assert_rejected, export_tree, stage_changes

STAGE = "org.osbuild.debug-shell"
UNIT = "/etc/systemd/system/osbuild-debug-shell.service"
BASE = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc/systemd/system", "parents": True}]}}]


def test_unit_on_the_tty_wanted_by_sysinit(shared_store):
    changes = stage_changes(BASE, [{"name": STAGE, "options": {"tty": "/dev/ttyS0"}}], shared_store)
    assert_changes(changes, {"added": {
        UNIT: {"type": "file", "mode": "0644", "uid": 0},
        "/etc/systemd/system/sysinit.target.wants": {"type": "dir", "mode": "0755"},
        "/etc/systemd/system/sysinit.target.wants/osbuild-debug-shell.service": {
            "type": "symlink", "target": "../osbuild-debug-shell.service"},
    }})
    unit = changes["added"][UNIT]["text"]
    for line in ("DefaultDependencies=no", "ConditionPathExists=/dev/ttyS0", "TTYPath=/dev/ttyS0",
                 "ExecStart=/bin/sh", "StandardInput=tty", "Restart=always", "KillSignal=SIGHUP"):
        assert line + "\n" in unit, line


def test_systemd_reads_the_unit(shared_store):
    tree = export_tree([*BASE, {"name": STAGE, "options": {"tty": "/dev/tty2"}}], shared_store)
    shown = subprocess.run(["systemd-analyze", f"--root={tree}", "cat-config", "systemd/system/osbuild-debug-shell.service"],
                           capture_output=True, text=True, check=True).stdout
    assert "TTYPath=/dev/tty2" in shown
    # The sysinit.target.wants link is what systemd counts as enabling it.
    state = subprocess.run(["systemctl", f"--root={tree}", "is-enabled", "osbuild-debug-shell.service"],
                           capture_output=True, text=True, check=False)
    assert state.stdout.strip() == "enabled", state.stdout + state.stderr


@pytest.mark.parametrize(("options", "path"), [
    ({}, ".stages[0].options"),
    ({"tty": "ttyS0"}, ".stages[0].options.tty"),
    ({"tty": "/dev/tty1\nExecStart=/bin/evil"}, ".stages[0].options.tty"),
    ({"tty": "/dev/tty1", "autologin": True}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
