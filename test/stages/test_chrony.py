"""org.osbuild.chrony: NTP servers in Debian's /etc/chrony/chrony.conf or Fedora's /etc/chrony.conf."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.chrony"
FEDORA_CONF = ("# Use public servers from the pool.ntp.org project.\npool 2.fedora.pool.ntp.org iburst\n\n"
               "driftfile /var/lib/chrony/drift\n")


def chrony(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": options}


def test_debian_chrony_conf(debian_base, shared_store):
    locked = debian_base.lock_apt(["chrony"])
    installed = locked["pipeline"]["stages"][1:]
    changes = debian_base.changes([*installed, chrony(timeservers=["ntp1.example.com", "192.0.2.1"])], shared_store,
                                  sources=locked["sources"], on=installed)
    assert_changes(changes, {"changed": {"/etc/chrony/chrony.conf": {"lines": {
        "removed": ["pool 2.debian.pool.ntp.org iburst"],
        "added": ["server ntp1.example.com iburst", "server 192.0.2.1 iburst"],
    }}}})


def test_fedora_chrony_conf_with_later_servers(shared_store):
    base = [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/chrony.conf", "text": FEDORA_CONF}]}}]
    stage = chrony(timeservers=["a.example"], servers=[
        {"hostname": "b.example", "minpoll": 4, "maxpoll": 10, "prefer": True},
        {"hostname": "c.example", "iburst": False},
    ])
    changes = stage_changes(base, [stage], shared_store)
    assert_changes(changes, {"changed": {"/etc/chrony.conf": {"lines": {
        "removed": ["pool 2.fedora.pool.ntp.org iburst"],
        "added": ["server a.example iburst", "server b.example minpoll 4 maxpoll 10 iburst prefer", "server c.example"],
    }}}})


def test_a_tree_without_chrony_fails_in_one_line(debian_base, shared_store):
    report = debian_base.failure([chrony(timeservers=["ntp.example"])], shared_store)
    assert "the tree has no chrony configuration (/etc/chrony/chrony.conf or /etc/chrony.conf; install chrony first)" in report


@pytest.mark.parametrize(("options", "path"), [
    ({}, ".stages[0].options"),
    ({"timeservers": ["ntp.example iburst\nserver evil"]}, ".stages[0].options.timeservers[0]"),
    ({"servers": [{"hostname": "a", "minpoll": 30}]}, ".stages[0].options.servers[0].minpoll"),
    ({"servers": [{"hostname": "a", "burst": True}]}, ".stages[0].options.servers[0]"),
    ({"leapsectz": "right/UTC"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
