"""org.osbuild.systemd.preset: a preset file; on Debian, whose packages ignore presets, applied too."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.systemd.preset"
UNITS = "/usr/lib/systemd/system"
PRESETS = [{"name": "demo.service", "state": "enable"}, {"name": "old.service", "state": "disable"},
           {"name": "absent.service", "state": "enable"}]
PRESET_TEXT = "enable demo.service\ndisable old.service\nenable absent.service\n"


def unit_files() -> list[dict[str, Any]]:
    service = "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
    return [{"path": f"{UNITS}/demo.service", "text": service}, {"path": f"{UNITS}/old.service", "text": service},
            {"path": f"{UNITS}/multi-user.target", "text": "[Unit]\nDescription=Multi-User System\n"}]


def tree(debian: bool) -> list[dict[str, Any]]:
    """Two units, old.service enabled (as a package's script would have done), on Debian or not."""
    files = unit_files() + ([{"path": "/etc/debian_version", "text": "12.5\n"}] if debian else [])
    return [{"name": "org.osbuild.copy", "options": {"files": files}},
            {"name": "org.osbuild.systemd", "options": {"enabled_services": ["old.service"]}}]


def preset(presets: list[dict[str, str]]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"presets": presets}}


PRESET_ADDED = {"/usr/lib/systemd/system-preset": {"type": "dir", "mode": "0755"},
                "/usr/lib/systemd/system-preset/50-osbuild.preset": {"text": PRESET_TEXT, "mode": "0644"}}


def test_the_preset_file_alone_where_packages_apply_presets(shared_store):
    assert_changes(stage_changes(tree(debian=False), [preset(PRESETS)], shared_store), {"added": PRESET_ADDED})


def test_debian_applies_the_presets_to_installed_units(shared_store):
    changes = stage_changes(tree(debian=True), [preset(PRESETS)], shared_store)
    wants = "/etc/systemd/system/multi-user.target.wants"
    assert_changes(changes, {
        "added": {**PRESET_ADDED, f"{wants}/demo.service": {"type": "symlink", "target": f"{UNITS}/demo.service"}},
        "removed": {f"{wants}/old.service": {"type": "symlink"}},
    })


def test_a_unit_listed_twice_fails(shared_store):
    report = build_failure([*tree(debian=False), preset([{"name": "a.service", "state": "enable"},
                                                         {"name": "a.service", "state": "disable"}])], shared_store)
    assert "error: a.service has more than one state" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"presets": PRESETS, "file": "90-x.preset"}, ".stages[0].options"),
    ({"presets": [{"name": "a.service", "state": "mask"}]}, ".stages[0].options.presets[0].state"),
    ({"presets": [{"name": "a.service"}]}, ".stages[0].options.presets[0]"),
    ({"presets": [{"name": "a.service\nenable *", "state": "disable"}]}, ".stages[0].options.presets[0].name"),
    ({"presets": []}, ".stages[0].options.presets"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
