"""org.osbuild.systemd-journald: a journald.conf.d drop-in; an existing one is not overwritten."""

from __future__ import annotations

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.systemd-journald"
STAGE_OPTIONS = {"filename": "10-persistent.conf",
                 "config": {"Journal": {"Storage": "persistent", "Compress": "300K", "SplitMode": "uid", "Audit": "yes"}}}


def test_journal_dropin(shared_store):
    changes = stage_changes([], [{"name": STAGE, "options": STAGE_OPTIONS}], shared_store)
    assert_changes(changes, {"added": {
        "/usr": {"type": "dir"}, "/usr/lib": {"type": "dir"}, "/usr/lib/systemd": {"type": "dir"},
        "/usr/lib/systemd/journald.conf.d": {"type": "dir", "mode": "0755"},
        "/usr/lib/systemd/journald.conf.d/10-persistent.conf": {
            "mode": "0644", "text": "[Journal]\nAudit=yes\nCompress=300K\nSplitMode=uid\nStorage=persistent\n"},
    }})


def test_an_existing_dropin_is_not_overwritten(shared_store):
    stage = {"name": STAGE, "options": STAGE_OPTIONS}
    report = build_failure([stage, stage], shared_store)
    assert "error: /usr/lib/systemd/journald.conf.d/10-persistent.conf exists already" in report


@pytest.mark.parametrize(("options", "path"), [
    ({**STAGE_OPTIONS, "mode": "0644"}, ".stages[0].options"),
    ({"filename": "a.conf", "config": {"Journal": {"Storage": "disk"}}}, ".stages[0].options.config.Journal.Storage"),
    ({"filename": "a.conf", "config": {"Journal": {"RateLimitBurst": "10"}}}, ".stages[0].options.config.Journal"),
    ({"filename": "a.conf", "config": {"Journal": {}}}, ".stages[0].options.config.Journal"),
    ({"filename": "a.conf", "config": {"Upload": {"URL": "x"}}}, ".stages[0].options.config"),
    ({"filename": "a/b.conf", "config": {"Journal": {"Audit": "no"}}}, ".stages[0].options.filename"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
