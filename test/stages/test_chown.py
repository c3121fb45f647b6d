"""org.osbuild.chown: owners by the image's names or by number, recursion, symlinks kept inside the tree."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.chown"


def base_stages() -> list[dict[str, Any]]:
    """An /etc/passwd and /etc/group that name users the build root does not have, and files owned by root."""
    return [
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": "/etc/passwd", "text": "root:x:0:0:root:/root:/bin/sh\nimgsvc:x:1234:1234::/srv:/bin/false\n"},
            {"path": "/etc/group", "text": "root:x:0:\nimgsvc:x:1234:\nimgdata:x:4321:imgsvc\n"},
            {"path": "/srv/app/conf", "text": "a\n"},
            {"path": "/srv/app/data/db", "text": "b\n"},
            {"path": "/srv/one", "text": "1\n"},
            {"path": "/srv/two", "text": "2\n"},
        ]}},
        {"name": "org.osbuild.ln", "options": {"paths": [
            {"target": "/srv/one", "link_name": "tree:///srv/app/link", "symbolic": True},
        ]}},
    ]


def chown(items: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"items": items}}


def test_names_come_from_the_tree_and_numbers_are_taken_as_they_are(shared_store):
    stage = chown({
        "/srv/one": {"user": "imgsvc"},
        "/srv/two": {"group": "imgdata"},
        "/srv/app/conf": {"user": 2000, "group": 3000},
        "/srv/app/data": {"user": "imgsvc", "group": "4321"},
    })
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"changed": {
        "/srv/one": {"uid": [0, 1234]},
        "/srv/two": {"gid": [0, 4321]},
        "/srv/app/conf": {"uid": [0, 2000], "gid": [0, 3000]},
        "/srv/app/data": {"uid": [0, 1234], "gid": [0, 4321]},
    }})


def test_recursive_changes_links_themselves_not_their_targets(shared_store):
    changes = stage_changes(base_stages(), [chown({"/srv/app": {"user": "imgsvc", "group": "imgsvc",
                                                                 "recursive": True}})], shared_store)
    owned = {"uid": [0, 1234], "gid": [0, 1234]}
    assert_changes(changes, {"changed": {
        "/srv/app": owned, "/srv/app/conf": owned, "/srv/app/data": owned, "/srv/app/data/db": owned,
        "/srv/app/link": owned,
    }})


def test_a_named_symlink_changes_its_target(shared_store):
    changes = stage_changes(base_stages(), [chown({"/srv/app/link": {"group": 99}})], shared_store)
    assert_changes(changes, {"changed": {"/srv/one": {"gid": [0, 99]}}})


def test_unknown_names_and_missing_paths_fail(shared_store):
    report = build_failure([*base_stages(), chown({"/srv/one": {"user": "nobody"}})], shared_store)
    assert "error: user 'nobody' is not in the tree's /etc/passwd" in report
    report = build_failure([*base_stages(), chown({"/srv/none": {"group": 0}})], shared_store)
    assert "error: /srv/none does not exist" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"items": {"/a": {"user": "root", "mode": "0644"}}}, ".stages[0].options.items./a"),
    ({"items": {"/a": {"user": "root"}}, "dereference": False}, ".stages[0].options"),
    ({"items": {"/a": {"user": -1}}}, ".stages[0].options.items./a.user"),
    ({"items": {"/a": {"group": "no:colons"}}}, ".stages[0].options.items./a.group"),
    ({"items": {"/a": {"recursive": True}}}, ".stages[0].options.items./a"),
    ({"items": {"/../a": {"user": 0}}}, ".stages[0].options.items"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
