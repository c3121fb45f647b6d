"""The configuration stages on a real Debian bookworm tree, where Debian's layout or tools decide what they do."""

from __future__ import annotations

from conftest import assert_changes

LIB = "/lib/systemd/system"
ETC = "/etc/systemd/system"


def test_presets_are_applied_on_debian(debian_base, shared_store):
    """Debian's package scripts never read presets: the stage applies them to the installed units."""
    stage = {"name": "org.osbuild.systemd.preset", "options": {"presets": [
        {"name": "e2scrub_reap.service", "state": "disable"},
        {"name": "systemd-networkd.service", "state": "enable"},
        {"name": "ssh.service", "state": "enable"},
    ]}}
    changes = debian_base.changes([stage], shared_store)
    assert_changes(changes, {
        "added": {
            "/usr/lib/systemd/system-preset/50-osbuild.preset": {"text": (
                "disable e2scrub_reap.service\nenable systemd-networkd.service\nenable ssh.service\n")},
            f"{ETC}/multi-user.target.wants/systemd-networkd.service": {"target": f"{LIB}/systemd-networkd.service"},
            f"{ETC}/dbus-org.freedesktop.network1.service": {"target": f"{LIB}/systemd-networkd.service"},
            f"{ETC}/sockets.target.wants": {"type": "dir"},
            f"{ETC}/sockets.target.wants/systemd-networkd.socket": {"target": f"{LIB}/systemd-networkd.socket"},
            f"{ETC}/network-online.target.wants": {"type": "dir"},
            f"{ETC}/network-online.target.wants/systemd-networkd-wait-online.service": {
                "target": f"{LIB}/systemd-networkd-wait-online.service"},
            f"{ETC}/sysinit.target.wants/systemd-network-generator.service": {
                "target": f"{LIB}/systemd-network-generator.service"},
        },
        "removed": {f"{ETC}/multi-user.target.wants/e2scrub_reap.service": {"target": f"{LIB}/e2scrub_reap.service"}},
    })


def test_machine_id_and_kernel_cmdline_and_modprobe_on_debian(debian_base, shared_store):
    """mmdebstrap leaves /etc/machine-id empty; /lib is /usr/lib (merged /usr); GRUB is not installed."""
    stages = [
        {"name": "org.osbuild.machine-id", "options": {"first-boot": "yes"}},
        {"name": "org.osbuild.kernel-cmdline", "options": {"root_fs_uuid": "6699-AFB5", "kernel_opts": "quiet"}},
        {"name": "org.osbuild.modprobe", "options": {"filename": "no-floppy.conf", "commands": [
            {"command": "blacklist", "modulename": "floppy"}]}},
    ]
    changes = debian_base.changes(stages, shared_store)
    assert_changes(changes, {
        "added": {
            "/etc/kernel/cmdline": {"text": "root=UUID=6699-AFB5 quiet\n"},
            "/usr/lib/modprobe.d/no-floppy.conf": {"text": "blacklist floppy\n"},
        },
        "changed": {"/etc/machine-id": {"size": [0, 14]}},
    })


def test_sshd_config_on_debian(debian_base, shared_store):
    """Debian's own sshd_config: the options go before its Include of sshd_config.d."""
    lock = debian_base.lock_apt(["openssh-server"])
    apt = lock["pipeline"]["stages"][1:]
    stage = {"name": "org.osbuild.sshd.config", "options": {"config": {
        "PasswordAuthentication": False, "ChallengeResponseAuthentication": False, "PermitRootLogin": False}}}
    changes = debian_base.changes([stage], shared_store, sources=lock["sources"], on=apt)
    assert_changes(changes, {"changed": {"/etc/ssh/sshd_config": {"lines": {
        "removed": [],
        "added": ["PasswordAuthentication no", "ChallengeResponseAuthentication no", "PermitRootLogin no"],
    }}}})
    tree = debian_base.export([*apt, stage], shared_store, sources=lock["sources"])
    lines = (tree / "etc/ssh/sshd_config").read_text().splitlines()
    include = lines.index("Include /etc/ssh/sshd_config.d/*.conf")
    assert lines[include - 3:include] == ["PasswordAuthentication no", "ChallengeResponseAuthentication no",
                                          "PermitRootLogin no"]
    # Debian's file says "KbdInteractiveAuthentication no" already: the same option, the same value.
    assert "KbdInteractiveAuthentication no" in lines
