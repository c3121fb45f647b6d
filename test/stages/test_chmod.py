"""org.osbuild.chmod: octal and symbolic modes, recursion, symlinks followed inside the tree only."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.chmod"


def base_stages() -> list[dict[str, Any]]:
    """Files and a directory tree, all 0644/0755, and links that point at them from inside and 'outside'."""
    return [
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": "/usr/bin/tool", "text": "#!/bin/sh\n"},
            {"path": "/srv/app/conf", "text": "a\n"},
            {"path": "/srv/app/data/db", "text": "b\n"},
            {"path": "/etc/passwd", "text": "root:x:0:0:root:/root:/bin/sh\n"},
        ]}},
        {"name": "org.osbuild.ln", "options": {"paths": [
            {"target": "/usr/bin/tool", "link_name": "tree:///usr/bin/alias", "symbolic": True},
            # On the host this would be the host's /etc/passwd; in the image it is the tree's.
            {"target": "/etc/passwd", "link_name": "tree:///srv/passwd", "symbolic": True},
            {"target": "../../../../../usr/bin/tool", "link_name": "tree:///srv/app/up", "symbolic": True},
        ]}},
    ]


def test_octal_and_symbolic_modes(shared_store):
    stage = {"name": STAGE, "options": {"items": {
        "/usr/bin/tool": {"mode": "0755"},
        "/srv/app/conf": {"mode": "go-r"},
        "/srv/app": {"mode": "4750"},
    }}}
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"changed": {
        "/usr/bin/tool": {"mode": ["0644", "0755"]},
        "/srv/app/conf": {"mode": ["0644", "0600"]},
        "/srv/app": {"mode": ["0755", "4750"]},
    }})


def test_recursive_changes_everything_inside_but_follows_no_symlinks(shared_store):
    stage = {"name": STAGE, "options": {"items": {"/srv/app": {"mode": "o-rwx", "recursive": True}}}}
    changes = stage_changes(base_stages(), [stage], shared_store)
    # /srv/app/up links to /usr/bin/tool: recursion leaves it and its target alone.
    assert_changes(changes, {"changed": {
        "/srv/app": {"mode": ["0755", "0750"]},
        "/srv/app/conf": {"mode": ["0644", "0640"]},
        "/srv/app/data": {"mode": ["0755", "0750"]},
        "/srv/app/data/db": {"mode": ["0644", "0640"]},
    }})


def test_a_named_symlink_is_followed_inside_the_tree(shared_store):
    stage = {"name": STAGE, "options": {"items": {
        "/usr/bin/alias": {"mode": "a+x"},
        "/srv/passwd": {"mode": "0600"},
        "/srv/app/up": {"mode": "u+s"},
    }}}
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"changed": {
        "/usr/bin/tool": {"mode": ["0644", "4755"]},
        "/etc/passwd": {"mode": ["0644", "0600"]},
    }})


def test_a_missing_path_fails(shared_store):
    report = build_failure([*base_stages(), {"name": STAGE, "options": {"items": {"/nope": {"mode": "0644"}}}}],
                           shared_store)
    assert "error: /nope does not exist" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"items": {"/a": {"mode": "0644", "owner": "root"}}}, ".stages[0].options.items./a"),
    ({"items": {"/a": {"mode": "0644"}}, "follow": True}, ".stages[0].options"),
    ({"items": {"/a": {"mode": 420}}}, ".stages[0].options.items./a.mode"),
    ({"items": {"/a": {"mode": "u+q"}}}, ".stages[0].options.items./a.mode"),
    ({"items": {"/../etc": {"mode": "0644"}}}, ".stages[0].options.items"),
    ({"items": {"relative": {"mode": "0644"}}}, ".stages[0].options.items"),
    ({"items": {"/srv/../../etc": {"mode": "0644"}}}, ".stages[0].options.items"),
    ({"items": {"/a": {}}}, ".stages[0].options.items./a"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
