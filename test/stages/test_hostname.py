"""org.osbuild.hostname: /etc/hostname, and Debian's 127.0.1.1 line in /etc/hosts."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.hostname"
HOSTS = """127.0.0.1\tlocalhost
127.0.1.1\told

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""


def base_stages() -> list[dict[str, Any]]:
    """A Debian-like /etc: debian_version and Debian's default /etc/hosts."""
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/debian_version", "text": "12.0\n"},
        {"path": "/etc/hosts", "text": HOSTS},
    ]}}]


def other_distribution_stages() -> list[dict[str, Any]]:
    """A tree that is not Debian's: it has /etc/hosts but no /etc/debian_version."""
    return [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/hosts", "text": HOSTS}]}}]


def hostname(name: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"hostname": name}}


def test_hostname_on_debian_sets_the_127_0_1_1_line(shared_store):
    changes = stage_changes(base_stages(), [hostname("box")], shared_store)
    assert_changes(changes, {
        "added": {"/etc/hostname": {"type": "file", "text": "box\n", "mode": "0644", "uid": 0, "gid": 0}},
        "changed": {"/etc/hosts": {"lines": {"removed": ["127.0.1.1\told"], "added": ["127.0.1.1\tbox"]}}},
    })


def test_dotted_name_lists_full_then_short_name(shared_store):
    changes = stage_changes(base_stages(), [hostname("box.example.com")], shared_store)
    assert_changes(changes, {
        "added": {"/etc/hostname": {"text": "box.example.com\n"}},
        "changed": {"/etc/hosts": {"lines": {"removed": ["127.0.1.1\told"],
                                             "added": ["127.0.1.1\tbox.example.com box"]}}},
    })


def test_missing_127_0_1_1_line_goes_after_localhost(shared_store):
    base = [*base_stages(), {"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/hosts", "text": "127.0.0.1 localhost\n::1 localhost\n"}]}}]
    changes = stage_changes(base, [hostname("box")], shared_store)
    assert_changes(changes, {
        "added": {"/etc/hostname": {"text": "box\n"}},
        "changed": {"/etc/hosts": {"lines": {"removed": [], "added": ["127.0.1.1\tbox"]}}},
    })


def test_other_distributions_keep_their_hosts_file(shared_store):
    changes = stage_changes(other_distribution_stages(), [hostname("box")], shared_store)
    assert_changes(changes, {"added": {"/etc/hostname": {"text": "box\n"}}})


@pytest.mark.parametrize(("options", "path"), [
    ({"hostname": "box", "domain": "example.com"}, ".stages[0].options"),
    ({"hostname": 7}, ".stages[0].options.hostname"),
    ({"hostname": "-box"}, ".stages[0].options.hostname"),
    ({"hostname": "box_1"}, ".stages[0].options.hostname"),
    ({"hostname": "box\n"}, ".stages[0].options.hostname"),
    ({"hostname": "a..b"}, ".stages[0].options.hostname"),
    ({"hostname": "a" * 64}, ".stages[0].options.hostname"),
    ({"hostname": ".".join(["a" * 63] * 4)}, ".stages[0].options.hostname"),
    ({}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_hostname_on_a_debian_tree_writes_hosts(debian_base, shared_store):
    """No package ships /etc/hosts: a bootstrapped tree gets the one Debian's installer would write."""
    changes = debian_base.changes([hostname("box.example.com")], shared_store)
    assert_changes(changes, {"added": {
        "/etc/hostname": {"text": "box.example.com\n", "mode": "0644", "uid": 0},
        "/etc/hosts": {"mode": "0644", "uid": 0, "text": (
            "127.0.0.1\tlocalhost\n"
            "127.0.1.1\tbox.example.com box\n"
            "\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\n"
            "ff02::2\tip6-allrouters\n"
        )},
    }})


def test_hosts_that_is_a_symlink_is_left_alone(debian_base, shared_store):
    link = {"name": "org.osbuild.script", "options": {"script": "ln -s /run/hosts /etc/hosts\n"}}
    changes = debian_base.changes([hostname("box")], shared_store, on=[link])
    assert_changes(changes, {"added": {"/etc/hostname": {"text": "box\n"}}})
