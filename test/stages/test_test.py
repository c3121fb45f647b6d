"""org.osbuild.test: a service that reports the boot's outcome on the console, installed and enabled."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, export_tree

STAGE = "org.osbuild.test"
UNIT = "osbuild-boot-report.service"
SCRIPT = "/usr/libexec/osbuild-boot-report"


def boot_report(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": options}


def test_service_is_installed_and_enabled(debian_base, shared_store):
    changes = debian_base.changes([boot_report()], shared_store)
    added = changes["added"]
    assert_changes(changes, {"added": {
        SCRIPT: {"type": "file", "mode": "0755", "uid": 0},
        f"/usr/lib/systemd/system/{UNIT}": {"type": "file", "mode": "0644", "uid": 0},
        f"/etc/systemd/system/multi-user.target.wants/{UNIT}": {"type": "symlink",
                                                                "target": f"/usr/lib/systemd/system/{UNIT}"},
    }})
    unit = added[f"/usr/lib/systemd/system/{UNIT}"]["text"]
    assert f"ExecStart={SCRIPT}\n" in unit
    assert "[Install]\nWantedBy=multi-user.target\n" in unit
    script = added[SCRIPT]["text"]
    assert script.startswith("#!/bin/sh\n")
    assert "systemctl is-system-running --wait" in script
    assert "osbuild-boot-test: done" in script
    assert "poweroff" not in script

    # systemd itself sees the unit as enabled in the tree.
    tree = debian_base.export([boot_report()], shared_store)
    state = subprocess.run(["systemctl", f"--root={tree}", "is-enabled", UNIT], capture_output=True, text=True, check=False)
    assert state.stdout.strip() == "enabled", state.stdout + state.stderr


def test_report_and_poweroff(shared_store, tmp_path):
    """The installed script, run by the host's sh with a stand-in systemctl that describes a degraded boot."""
    tree = export_tree([{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}, boot_report(poweroff=True)],
                       shared_store)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$1" in\n'
        "  is-system-running) echo degraded; exit 1 ;;\n"
        '  list-units) printf "foo.service loaded failed failed Foo\\nbar.mount loaded failed failed Bar\\n" ;;\n'
        "esac\n")
    (bin_dir / "systemctl").chmod(0o755)
    proc = subprocess.run(["sh", str(tree / SCRIPT.lstrip("/"))], capture_output=True, text=True, check=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    # Empty lines do not count: they only make sure each report line starts a line of its own.
    assert [line for line in proc.stdout.splitlines() if line] == [
        "osbuild-boot-test: degraded",
        "osbuild-boot-test: failed foo.service",
        "osbuild-boot-test: failed bar.mount",
        "osbuild-boot-test: done",
    ]
    assert calls.read_text().splitlines() == [
        "is-system-running --wait", "list-units --failed --no-legend --plain", "poweroff"]


def test_the_originals_script_is_reported_and_powers_off(shared_store, tmp_path):
    """The original's `script` option: its command's output is the report, then the machine powers off."""
    tree = export_tree([{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}},
                        boot_report(script="echo all good")], shared_store)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    proc = subprocess.run(["sh", str(tree / SCRIPT.lstrip("/"))], capture_output=True, text=True, check=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert [line for line in proc.stdout.splitlines() if line] == ["osbuild-boot-test: all good", "osbuild-boot-test: done"]
    assert calls.read_text().splitlines() == ["list-units --failed --no-legend --plain", "poweroff"]


@pytest.mark.parametrize(("options", "path"), [
    ({"script": "echo one\necho two"}, ".stages[0].options.script"),
    ({"poweroff": "yes"}, ".stages[0].options.poweroff"),
    ({"poweroff": True, "timeout": 60}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
