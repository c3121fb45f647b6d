"""org.osbuild.ln: symbolic and hard links by tree:// location or path; nothing is made outside the tree."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, export_tree, stage_changes

STAGE = "org.osbuild.ln"


def base_stages() -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/usr/bin/busybox", "text": "#!/bin/sh\n", "mode": 0o755},
        {"path": "/etc/os-release", "text": "ID=test\n"},
        {"path": "/usr/lib/os-release", "text": "ID=real\n"},
    ]}}, {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/usr/sbin"}]}}]


def ln(*paths: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"paths": list(paths)}}


def test_symbolic_links_are_written_as_given(shared_store):
    stage = ln({"target": "../lib/os-release", "link_name": "tree:///usr/sbin/os-release", "symbolic": True},
               {"target": "/nonexistent/yet", "link_name": "/dangling", "symbolic": True})
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/usr/sbin/os-release": {"type": "symlink", "target": "../lib/os-release"},
        "/dangling": {"type": "symlink", "target": "/nonexistent/yet"},
    }})


def test_hard_links_share_the_file(shared_store):
    stage = ln({"target": "/usr/bin/busybox", "link_name": "tree:///usr/sbin/init"},
               {"target": "busybox", "link_name": "/usr/bin/sh"})
    changes = stage_changes(base_stages(), [stage], shared_store)
    same = {"type": "file", "mode": "0755", "text": "#!/bin/sh\n"}
    assert_changes(changes, {"added": {"/usr/sbin/init": same, "/usr/bin/sh": same}})
    tree = export_tree([*base_stages(), stage], shared_store)
    inodes = {os.stat(tree / path).st_ino for path in ("usr/bin/busybox", "usr/sbin/init", "usr/bin/sh")}
    assert len(inodes) == 1


@pytest.mark.parametrize(("link", "error"), [
    ({"target": "x", "link_name": "tree:///etc/os-release", "symbolic": True}, "tree:///etc/os-release exists already"),
    ({"target": "x", "link_name": "tree:///opt/x", "symbolic": True}, "the directory of tree:///opt/x does not exist"),
    ({"target": "/etc", "link_name": "tree:///etc2"}, "/etc: a hard link needs an existing regular file"),
    ({"target": "/etc/../../../etc/passwd", "link_name": "tree:///passwd"}, "leaves the tree"),
    ({"target": "x", "link_name": "tree:///usr/../../x", "symbolic": True}, "leaves the tree"),
])
def test_bad_links_fail_the_stage(shared_store, link, error):
    report = build_failure([*base_stages(), ln(link)], shared_store)
    assert error in report


@pytest.mark.parametrize(("options", "path"), [
    ({"paths": [{"target": "a", "link_name": "/b", "force": True}]}, ".stages[0].options.paths[0]"),
    ({"paths": [{"target": "a", "link_name": "/b"}], "relative": True}, ".stages[0].options"),
    ({"paths": [{"target": "a", "link_name": "b"}]}, ".stages[0].options.paths[0].link_name"),
    # A format-1 stage has no mounts.
    ({"paths": [{"target": "a", "link_name": "mount://root/b"}]}, ".stages[0].options.paths[0].link_name"),
    ({"paths": [{"target": "a", "link_name": "/b", "symbolic": "yes"}]}, ".stages[0].options.paths[0].symbolic"),
    ({"paths": []}, ".stages[0].options.paths"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
