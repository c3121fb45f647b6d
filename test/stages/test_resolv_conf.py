"""org.osbuild.resolv-conf: a static /etc/resolv.conf, replacing a link."""

from __future__ import annotations

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.resolv-conf"
# As a Debian tree with systemd-resolved has it.
RESOLVED_LINK = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}},
                 {"name": "org.osbuild.ln", "options": {"paths": [
                     {"target": "../run/systemd/resolve/stub-resolv.conf", "link_name": "/etc/resolv.conf", "symbolic": True}]}}]


def test_search_and_name_servers_replace_a_link(shared_store):
    stage = {"name": STAGE, "options": {"nameserver": ["192.0.2.53", "2001:db8::53"], "search": ["example.com", "lan"]}}
    changes = stage_changes(RESOLVED_LINK, [stage], shared_store)
    assert_changes(changes, {"changed": {"/etc/resolv.conf": {"type": ["symlink", "file"]}}})
    after = stage_changes([], [stage], shared_store)
    assert_changes(after, {"added": {"/etc": {"type": "dir"}, "/etc/resolv.conf": {"mode": "0644", "uid": 0, "text": (
        "# This file was created by osbuild\nsearch example.com lan\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n")}}})


def test_no_options_gives_only_the_comment(shared_store):
    changes = stage_changes([], [{"name": STAGE, "options": {}}], shared_store)
    assert_changes(changes, {"added": {"/etc": {"type": "dir"},
                                       "/etc/resolv.conf": {"text": "# This file was created by osbuild\n"}}})


@pytest.mark.parametrize(("options", "path"), [
    ({"nameserver": ["192.0.2.53"], "options": ["edns0"]}, ".stages[0].options"),
    ({"nameserver": "192.0.2.53"}, ".stages[0].options.nameserver"),
    ({"nameserver": ["192.0.2.53\nnameserver 6.6.6.6"]}, ".stages[0].options.nameserver[0]"),
    ({"nameserver": ["dns.example.com"]}, ".stages[0].options.nameserver[0]"),
    ({"search": ["two words"]}, ".stages[0].options.search[0]"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
