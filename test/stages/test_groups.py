"""org.osbuild.groups: groups created with groupadd --root, gids changed with groupmod --root."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.groups"
GROUP = "root:x:0:\nwheel:x:10:\n"
GSHADOW = "root:*::\nwheel:*::\n"
LOGIN_DEFS = "GID_MIN 1000\nGID_MAX 60000\nSYS_GID_MIN 100\nSYS_GID_MAX 999\n"


def base_stages() -> list[dict[str, Any]]:
    """A small system's group files and login.defs."""
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/passwd", "text": "root:x:0:0:root:/root:/bin/sh\n"},
        {"path": "/etc/shadow", "text": "root:*:19000:0:99999:7:::\n", "mode": 0o640},
        {"path": "/etc/group", "text": GROUP},
        {"path": "/etc/gshadow", "text": GSHADOW, "mode": 0o640},
        {"path": "/etc/login.defs", "text": LOGIN_DEFS},
    ]}}]


def groups(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"groups": entries}}


def test_new_groups(shared_store):
    changes = stage_changes(base_stages(), [groups(docker={"gid": 998}, developers={})], shared_store)
    assert_changes(changes, {
        # Each groupadd keeps the previous file: here, the one after the first group.
        "added": {"/etc/group-": {"text": GROUP + "developers:x:1000:\n"},
                  "/etc/gshadow-": {"text": GSHADOW + "developers:!::\n", "mode": "0640"}},
        "changed": {
            # In name order; a group without a gid gets the first free one from login.defs.
            "/etc/group": {"lines": {"removed": [], "added": ["developers:x:1000:", "docker:x:998:"]}},
            "/etc/gshadow": {"lines": {"removed": [], "added": ["developers:!::", "docker:!::"]}},
        },
    })


def test_existing_group_gets_the_given_gid_or_is_left_alone(shared_store):
    kept = stage_changes(base_stages(), [groups(wheel={"gid": 10}, root={})], shared_store)
    assert_changes(kept, {})
    moved = stage_changes(base_stages(), [groups(wheel={"gid": 11})], shared_store)
    assert_changes(moved, {
        "added": {"/etc/group-": {"text": GROUP}},
        "changed": {"/etc/group": {"lines": {"removed": ["wheel:x:10:"], "added": ["wheel:x:11:"]}}},
    })


def test_force_keeps_existing_groups_and_takes_a_free_gid(shared_store):
    stage = {"name": STAGE, "options": {"force": True, "groups": {"wheel": {"gid": 11}, "staff": {"gid": 10}}}}
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {
        "added": {"/etc/group-": {"text": GROUP}, "/etc/gshadow-": {"text": GSHADOW}},
        "changed": {"/etc/group": {"lines": {"removed": [], "added": ["staff:x:1000:"]}},
                    "/etc/gshadow": {"lines": {"removed": [], "added": ["staff:!::"]}}},
    })


def test_gid_in_use_fails_with_groupadds_reason(shared_store):
    report = build_failure([*base_stages(), groups(staff={"gid": 10})], shared_store)
    assert "groupadd: GID '10' already exists" in report


def test_tree_without_group_files_fails_clearly(shared_store):
    bare = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]
    report = build_failure([*bare, groups(docker={})], shared_store)
    assert "error: the tree has no /etc/group, /etc/gshadow: groupadd --root needs" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"groups": {"docker": {"gid": "998"}}}, ".stages[0].options.groups.docker.gid"),
    ({"groups": {"docker": {"gid": 998, "system": True}}}, ".stages[0].options.groups.docker"),
    ({"groups": {"docker": 998}}, ".stages[0].options.groups.docker"),
    ({"groups": {"Docker Users": {}}}, ".stages[0].options.groups"),
    ({"groups": ["docker"]}, ".stages[0].options.groups"),
    ({"groups": {}, "users": {}}, ".stages[0].options"),
    ({"groups": {}, "force": "yes"}, ".stages[0].options.force"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_groups_on_debian(debian_base, shared_store):
    """A group without a gid gets the first free one from Debian's login.defs (GID_MIN 1000)."""
    changes = debian_base.changes([groups(docker={}, render={"gid": 990}, sudo={"gid": 27})], shared_store)
    assert_changes(changes, {"changed": {
        # sudo has gid 27 already: left alone.
        "/etc/group": {"lines": {"removed": [], "added": ["docker:x:1000:", "render:x:990:"]}},
        "/etc/gshadow": {"lines": {"removed": [], "added": ["docker:!::", "render:!::"]}},
        "/etc/group-": {}, "/etc/gshadow-": {},
    }})
