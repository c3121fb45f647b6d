"""org.osbuild.timezone: /etc/localtime, Debian's /etc/timezone, and zones checked against the tree's tzdata."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.timezone"


def base_stages() -> list[dict[str, Any]]:
    """A Debian-like tree with a small zoneinfo database."""
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/debian_version", "text": "12.0\n"},
        {"path": "/usr/share/zoneinfo/Europe/Berlin", "text": "TZif2 Berlin\n"},
        {"path": "/usr/share/zoneinfo/UTC", "text": "TZif2 UTC\n"},
    ]}}]


def other_distribution_stages() -> list[dict[str, Any]]:
    """A tree that is not Debian's and has no tzdata yet."""
    return [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]


def timezone(zone: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"zone": zone}}


def test_timezone_on_debian(shared_store):
    changes = stage_changes(base_stages(), [timezone("Europe/Berlin")], shared_store)
    assert_changes(changes, {"added": {
        "/etc/localtime": {"type": "symlink", "target": "../usr/share/zoneinfo/Europe/Berlin", "uid": 0},
        "/etc/timezone": {"type": "file", "text": "Europe/Berlin\n", "mode": "0644", "uid": 0},
    }})


def test_timezone_replaces_the_previous_zone(shared_store):
    changes = stage_changes([*base_stages(), timezone("UTC")], [timezone("Europe/Berlin")], shared_store)
    assert_changes(changes, {"changed": {
        "/etc/localtime": {"target": ["../usr/share/zoneinfo/UTC", "../usr/share/zoneinfo/Europe/Berlin"]},
        "/etc/timezone": {"lines": {"removed": ["UTC"], "added": ["Europe/Berlin"]}},
    }})


def test_tree_without_tzdata_still_gets_the_link(shared_store):
    changes = stage_changes(other_distribution_stages(), [timezone("America/New_York")], shared_store)
    assert_changes(changes, {"added": {
        "/etc/localtime": {"type": "symlink", "target": "../usr/share/zoneinfo/America/New_York"},
    }})


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe"])
def test_zone_missing_from_tzdata_fails(shared_store, zone):
    report = build_failure([*base_stages(), timezone(zone)], shared_store)
    assert f"error: time zone '{zone}' is not in the tree's /usr/share/zoneinfo" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"zone": "UTC", "utc": True}, ".stages[0].options"),
    ({"zone": ["UTC"]}, ".stages[0].options.zone"),
    ({"zone": "../../etc/passwd"}, ".stages[0].options.zone"),
    ({"zone": "/Europe/Berlin"}, ".stages[0].options.zone"),
    ({"zone": "UTC\n"}, ".stages[0].options.zone"),
    ({"timezone": "UTC"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_timezone_on_a_debian_tree(debian_base, shared_store):
    """Debian's tzdata set Etc/UTC with an absolute link; the stage replaces both the link and /etc/timezone."""
    changes = debian_base.changes([timezone("Europe/Berlin")], shared_store)
    assert_changes(changes, {"changed": {
        "/etc/localtime": {"target": ["/usr/share/zoneinfo/Etc/UTC", "../usr/share/zoneinfo/Europe/Berlin"]},
        "/etc/timezone": {"lines": {"removed": ["Etc/UTC"], "added": ["Europe/Berlin"]}},
    }})
    report = debian_base.failure([timezone("Europe/Atlantis")], shared_store)
    assert "error: time zone 'Europe/Atlantis' is not in the tree's /usr/share/zoneinfo" in report
