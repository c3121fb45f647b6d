"""org.osbuild.systemd: unit links made offline with systemctl --root."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.systemd"
UNITS = "/usr/lib/systemd/system"


def service(wanted_by: str) -> str:
    return f"[Unit]\nDescription=Test\n\n[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy={wanted_by}\n"


def base_stages() -> list[dict[str, Any]]:
    """A tree with a few unit files and an /etc, and no links yet."""
    return [
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": f"{UNITS}/demo.service", "text": service("multi-user.target")},
            {"path": f"{UNITS}/other.service", "text": service("multi-user.target")},
            {"path": f"{UNITS}/getty@.service", "text": service("getty.target")},
            {"path": f"{UNITS}/multi-user.target", "text": "[Unit]\nDescription=Multi-User System\n"},
            {"path": f"{UNITS}/graphical.target", "text": "[Unit]\nDescription=Graphical Interface\n"},
        ]}},
        {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}},
    ]


def systemd(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": options}


def test_enable_units_and_set_default_target(shared_store):
    stage = systemd(enabled_services=["demo.service", "getty@tty1.service"], default_target="graphical.target")
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/etc/systemd": {"type": "dir"},
        "/etc/systemd/system": {"type": "dir"},
        "/etc/systemd/system/multi-user.target.wants": {"type": "dir"},
        "/etc/systemd/system/multi-user.target.wants/demo.service": {"type": "symlink", "target": f"{UNITS}/demo.service"},
        "/etc/systemd/system/getty.target.wants": {"type": "dir"},
        "/etc/systemd/system/getty.target.wants/getty@tty1.service": {"type": "symlink",
                                                                      "target": f"{UNITS}/getty@.service"},
        "/etc/systemd/system/default.target": {"type": "symlink", "target": f"{UNITS}/graphical.target"},
    }})


def test_disable_and_mask(shared_store):
    base = [*base_stages(), systemd(enabled_services=["demo.service", "other.service"])]
    stage = systemd(disabled_services=["other.service"], masked_services=["demo.service", "absent.service"])
    changes = stage_changes(base, [stage], shared_store)
    assert_changes(changes, {
        "removed": {"/etc/systemd/system/multi-user.target.wants/other.service": {"type": "symlink"}},
        # Masking links the unit to /dev/null; it needs no unit file, and leaves the enablement links.
        "added": {
            "/etc/systemd/system/demo.service": {"type": "symlink", "target": "/dev/null"},
            "/etc/systemd/system/absent.service": {"type": "symlink", "target": "/dev/null"},
        },
    })


def test_names_without_suffix_and_masked_generators_as_osbuild_has_them(shared_store):
    stage = systemd(enabled_services=["demo"], masked_generators=["systemd-gpt-auto-generator"])
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/etc/systemd": {"type": "dir"},
        "/etc/systemd/system": {"type": "dir"},
        "/etc/systemd/system/multi-user.target.wants": {"type": "dir"},
        "/etc/systemd/system/multi-user.target.wants/demo.service": {"type": "symlink", "target": f"{UNITS}/demo.service"},
        "/etc/systemd/system-generators": {"type": "dir", "mode": "0755"},
        "/etc/systemd/system-generators/systemd-gpt-auto-generator": {"type": "symlink", "target": "/dev/null"},
    }})


def test_enabling_a_unit_the_tree_lacks_fails(shared_store):
    report = build_failure([*base_stages(), systemd(enabled_services=["sshd.service"])], shared_store)
    assert "sshd.service does not exist" in report
    assert "failed with exit status" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"enabled_services": ["demo.service"], "preset": True}, ".stages[0].options"),
    ({"enabled_services": "demo.service"}, ".stages[0].options.enabled_services"),
    ({"disabled_services": ["demo service"]}, ".stages[0].options.disabled_services[0]"),
    ({"masked_generators": ["../bin/sh"]}, ".stages[0].options.masked_generators[0]"),
    ({"masked_services": ["../demo.service"]}, ".stages[0].options.masked_services[0]"),
    ({"default_target": "multi-user.service"}, ".stages[0].options.default_target"),
    ({"default_target": ["multi-user.target"]}, ".stages[0].options.default_target"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_units_debian_ships(debian_base, shared_store):
    """Debian's units live in /lib/systemd/system; enabling one follows its Also= and Alias= lines."""
    stage = systemd(enabled_services=["systemd-networkd.service"], disabled_services=["e2scrub_reap.service"],
                    masked_services=["apt-daily.timer"], default_target="multi-user.target")
    changes = debian_base.changes([stage], shared_store)
    lib = "/lib/systemd/system"
    etc = "/etc/systemd/system"
    assert_changes(changes, {
        "added": {
            f"{etc}/multi-user.target.wants/systemd-networkd.service": {"target": f"{lib}/systemd-networkd.service"},
            f"{etc}/dbus-org.freedesktop.network1.service": {"target": f"{lib}/systemd-networkd.service"},
            f"{etc}/sockets.target.wants": {"type": "dir", "mode": "0755"},
            f"{etc}/sockets.target.wants/systemd-networkd.socket": {"target": f"{lib}/systemd-networkd.socket"},
            f"{etc}/network-online.target.wants": {"type": "dir", "mode": "0755"},
            f"{etc}/network-online.target.wants/systemd-networkd-wait-online.service": {
                "target": f"{lib}/systemd-networkd-wait-online.service"},
            f"{etc}/sysinit.target.wants/systemd-network-generator.service": {
                "target": f"{lib}/systemd-network-generator.service"},
            # Masking leaves the timer's enablement link in timers.target.wants alone.
            f"{etc}/apt-daily.timer": {"type": "symlink", "target": "/dev/null"},
            f"{etc}/default.target": {"type": "symlink", "target": f"{lib}/multi-user.target"},
        },
        "removed": {f"{etc}/multi-user.target.wants/e2scrub_reap.service": {"target": f"{lib}/e2scrub_reap.service"}},
    })
