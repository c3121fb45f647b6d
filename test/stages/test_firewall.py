"""org.osbuild.firewall: ports and services of firewalld's default zone, set offline in a Debian tree."""

from __future__ import annotations

import pytest
from conftest import assert_rejected

STAGE = "org.osbuild.firewall"
ZONE = "/etc/firewalld/zones/public.xml"
# What the original osbuild's test pipeline asked for (test/data/original/test/pipelines/firewall.json).
OPTIONS = {"ports": ["53:tcp", "88:udp"], "enabled_services": ["http", "ftp"], "disabled_services": ["dhcpv6-client"]}


@pytest.fixture(scope="module")
def firewalld(debian_base):
    # firewalld reads protocol names from /etc/protocols, which minbase lacks.
    locked = debian_base.lock_apt(["firewalld", "netbase"])
    return locked["pipeline"]["stages"][1:], locked["sources"]


def test_ports_and_services_in_the_default_zone(debian_base, shared_store, firewalld):
    stages, sources = firewalld
    changes = debian_base.changes([*stages, {"name": STAGE, "options": OPTIONS}], shared_store, sources=sources,
                                  on=stages)
    written = {**changes["added"], **changes["changed"]}
    assert ZONE in written, sorted(written)
    zone = (debian_base.export([*stages, {"name": STAGE, "options": OPTIONS}], shared_store, sources=sources)
            / ZONE.lstrip("/")).read_text()
    for line in ('<port port="53" protocol="tcp"/>', '<port port="88" protocol="udp"/>',
                 '<service name="http"/>', '<service name="ftp"/>', '<service name="ssh"/>'):
        assert line in zone, zone
    assert "dhcpv6-client" not in zone
    # Only firewalld's configuration changed.
    assert all(path.startswith("/etc/firewalld") for path in written), sorted(written)
    assert not changes["removed"]


def test_an_unknown_service_fails_in_one_line(debian_base, shared_store, firewalld):
    stages, sources = firewalld
    report = debian_base.failure([*stages, {"name": STAGE, "options": {"enabled_services": ["no-such-service"]}}],
                                 shared_store, sources=sources)
    assert "firewall-offline-cmd" in report and "Traceback" not in report.split("last lines")[0]


def test_a_tree_without_firewalld_fails_in_one_line(shared_store, debian_base):
    report = debian_base.failure([{"name": STAGE, "options": {"ports": ["22:tcp"]}}], shared_store)
    assert "the tree has no /usr/bin/firewall-offline-cmd (install firewalld first)" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"ports": ["53/tcp"]}, ".stages[0].options.ports[0]"),
    ({"ports": ["53:icmp"]}, ".stages[0].options.ports[0]"),
    ({"enabled_services": ["http --zone=trusted"]}, ".stages[0].options.enabled_services[0]"),
    ({"zone": "public"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
