"""org.osbuild.sysctld: a sysctl.d file of KEY = VALUE lines and excluded keys."""

from __future__ import annotations

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.sysctld"


def test_parameters_and_excluded_keys(shared_store):
    stage = {"name": STAGE, "options": {"filename": "50-app.conf", "config": [
        {"key": "kernel.pid_max", "value": "4194304"},
        {"key": "-net.ipv4.conf.*.rp_filter", "value": "2"},
        {"key": "-net.ipv4.conf.lo.rp_filter"},
    ]}}
    changes = stage_changes([], [stage], shared_store)
    assert_changes(changes, {"added": {
        "/usr": {"type": "dir"}, "/usr/lib": {"type": "dir"}, "/usr/lib/sysctl.d": {"type": "dir", "mode": "0755"},
        "/usr/lib/sysctl.d/50-app.conf": {"mode": "0644", "text": (
            "kernel.pid_max = 4194304\n-net.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\n")},
    }})


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "a.conf", "config": [{"key": "a", "value": "1"}], "system": True}, ".stages[0].options"),
    ({"filename": "a.conf", "config": [{"key": "kernel.pid_max"}]}, ".stages[0].options.config[0]"),
    ({"filename": "a.conf", "config": [{"key": "a", "value": 1}]}, ".stages[0].options.config[0]"),
    ({"filename": "a.conf", "config": [{"key": "a", "value": "1\nkernel.x = 2"}]}, ".stages[0].options.config[0]"),
    ({"filename": "a.conf", "config": []}, ".stages[0].options.config"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
