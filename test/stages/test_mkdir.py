"""org.osbuild.mkdir: directories with modes, parents, exist_ok; paths that leave the tree are refused."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.mkdir"


def base_stages() -> list[dict[str, Any]]:
    """An empty tree, plus /srv (0755) and a masked unit, a symlink that points out of the tree."""
    return [
        {"name": STAGE, "options": {"paths": [{"path": "/srv"}, {"path": "/etc/systemd/system", "parents": True}]}},
        {"name": "org.osbuild.systemd", "options": {"masked_services": ["gone.service"]}},
    ]


def mkdir(*paths: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"paths": list(paths)}}


def test_mkdir_modes_and_parents(shared_store):
    stage = mkdir({"path": "/data"}, {"path": "/var/lib/app", "parents": True, "mode": 0o700},
                  {"path": "/data/drop", "mode": 0o1777})
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/data": {"type": "dir", "mode": "0755", "uid": 0, "gid": 0},
        "/data/drop": {"type": "dir", "mode": "1777"},
        "/var": {"type": "dir", "mode": "0755"},
        "/var/lib": {"type": "dir", "mode": "0755"},
        "/var/lib/app": {"type": "dir", "mode": "0700", "uid": 0, "gid": 0},
    }})


def test_a_relative_path_is_in_the_tree(shared_store):
    changes = stage_changes(base_stages(), [mkdir({"path": "srv/relative"})], shared_store)
    assert_changes(changes, {"added": {"/srv/relative": {"type": "dir", "mode": "0755"}}})


def test_exist_ok_keeps_directory_and_sets_only_a_given_mode(shared_store):
    kept = stage_changes(base_stages(), [mkdir({"path": "/srv", "exist_ok": True})], shared_store)
    assert_changes(kept, {})
    changed = stage_changes(base_stages(), [mkdir({"path": "/srv", "exist_ok": True, "mode": 0o750})],
                            shared_store)
    assert_changes(changed, {"changed": {"/srv": {"mode": ["0755", "0750"]}}})


def test_existing_directory_without_exist_ok_fails(shared_store):
    report = build_failure([*base_stages(), mkdir({"path": "/srv"})], shared_store)
    assert "error: /srv exists already (set exist_ok to accept that)" in report


def test_missing_parent_without_parents_fails(shared_store):
    report = build_failure([*base_stages(), mkdir({"path": "/opt/app"})], shared_store)
    assert "error: the parent of /opt/app does not exist (set parents to create it)" in report


def test_paths_that_leave_the_tree_are_refused(shared_store):
    # The masked unit links to /dev/null: a directory "under" it would be outside the tree.
    report = build_failure([*base_stages(), mkdir({"path": "/etc/systemd/system/gone.service/x", "parents": True})],
                     shared_store)
    assert "error: path '/etc/systemd/system/gone.service/x' leaves the tree through a symlink" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"paths": [{"path": "/a", "owner": "root"}]}, ".stages[0].options.paths[0]"),
    ({"paths": [{"path": "/a"}], "recursive": True}, ".stages[0].options"),
    ({"paths": [{"path": "/a", "mode": "0755"}]}, ".stages[0].options.paths[0].mode"),
    ({"paths": [{"path": "a/../../b"}]}, ".stages[0].options.paths[0].path"),
    ({"paths": [{"path": "/../../outside", "parents": True}]}, ".stages[0].options.paths[0].path"),
    # Locations are format 2's.
    ({"paths": [{"path": "tree:///a"}]}, ".stages[0].options.paths[0].path"),
    ({"paths": "/a"}, ".stages[0].options.paths"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
