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


def test_the_other_configuration_stages_on_debian(debian_base, shared_store):
    """The stages whose work is the same on every distribution, once on a real Debian tree."""
    base = debian_base.tree(shared_store)
    apt_uid = int(next(line for line in (base / "etc/passwd").read_text().splitlines()
                       if line.startswith("_apt:")).split(":")[2])
    stages = [
        {"name": "org.osbuild.chmod", "options": {"items": {"/etc/debian_version": {"mode": "0600"}}}},
        # /etc/os-release is Debian's link to ../usr/lib/os-release: the file changes owner, not the link.
        {"name": "org.osbuild.chown", "options": {"items": {"/etc/os-release": {"user": "_apt", "group": "nogroup"}}}},
        {"name": "org.osbuild.ln", "options": {"paths": [
            {"target": "/usr/bin/true", "link_name": "tree:///usr/local/bin/yes-it-is", "symbolic": True}]}},
        {"name": "org.osbuild.truncate", "options": {"filename": "/var/lib/swapfile", "size": "64K"}},
        {"name": "org.osbuild.gzip", "options": {"path": "/usr/lib/os-release", "filename": "/srv/os-release.gz"}},
        {"name": "org.osbuild.xz", "options": {"path": "/usr/lib/os-release", "filename": "/srv/os-release.xz"}},
        {"name": "org.osbuild.zstd", "options": {"path": "/usr/lib/os-release", "filename": "/srv/os-release.zst"}},
        {"name": "org.osbuild.tmpfilesd", "options": {"filename": "app.conf", "config": [
            {"type": "d", "path": "/run/app", "mode": "0750", "user": "root", "group": "adm"}]}},
        {"name": "org.osbuild.sysctld", "options": {"filename": "50-app.conf", "config": [
            {"key": "vm.swappiness", "value": "10"}]}},
        {"name": "org.osbuild.systemd.unit", "options": {"unit": "systemd-journald.service", "dropin": "10-env.conf",
                                                         "config": {"Service": {"Environment": [{"key": "A", "value": "1"}]}}}},
        {"name": "org.osbuild.systemd.unit.create", "options": {"filename": "app.service", "config": {
            "Unit": {"Description": "App"}, "Service": {"ExecStart": ["/usr/bin/true"]},
            "Install": {"WantedBy": ["multi-user.target"]}}}},
        {"name": "org.osbuild.systemd", "options": {"enabled_services": ["app"]}},
        {"name": "org.osbuild.systemd-journald", "options": {"filename": "10-volatile.conf",
                                                             "config": {"Journal": {"Storage": "volatile"}}}},
        {"name": "org.osbuild.udev.rules", "options": {"filename": "/etc/udev/rules.d/70-app.rules", "rules": [
            [{"key": "SUBSYSTEM", "op": "==", "val": "net"}, {"key": {"name": "ENV", "arg": "APP"}, "op": "=", "val": "1"}]]}},
        {"name": "org.osbuild.cloud-init", "options": {"filename": "00-user.cfg",
                                                       "config": {"system_info": {"default_user": {"name": "debian"}}}}},
        {"name": "org.osbuild.resolv-conf", "options": {"nameserver": ["192.0.2.53"]}},
    ]
    changes = debian_base.changes(stages, shared_store)
    assert_changes(changes, {
        "added": {
            "/usr/local/bin/yes-it-is": {"type": "symlink", "target": "/usr/bin/true"},
            "/var/lib/swapfile": {"size": 65536},
            "/srv/os-release.gz": {"type": "file"}, "/srv/os-release.xz": {"type": "file"},
            "/srv/os-release.zst": {"type": "file"},
            "/usr/lib/tmpfiles.d/app.conf": {"text": "d /run/app 0750 root adm\n"},
            "/usr/lib/sysctl.d/50-app.conf": {"text": "vm.swappiness = 10\n"},
            "/usr/lib/systemd/system/systemd-journald.service.d": {"type": "dir"},
            "/usr/lib/systemd/system/systemd-journald.service.d/10-env.conf": {"text": '[Service]\nEnvironment="A=1"\n'},
            "/usr/lib/systemd/system/app.service": {"type": "file"},
            # systemctl names it by Debian's first unit directory, /lib (the same as /usr/lib here).
            f"{ETC}/multi-user.target.wants/app.service": {"target": f"{LIB}/app.service"},
            "/usr/lib/systemd/journald.conf.d": {"type": "dir"},
            "/usr/lib/systemd/journald.conf.d/10-volatile.conf": {"text": "[Journal]\nStorage=volatile\n"},
            # The minimal base has no udev.
            "/etc/udev": {"type": "dir"}, "/etc/udev/rules.d": {"type": "dir"},
            "/etc/udev/rules.d/70-app.rules": {"text": 'SUBSYSTEM=="net", ENV{APP}="1"\n'},
            "/etc/cloud": {"type": "dir"}, "/etc/cloud/cloud.cfg.d": {"type": "dir"},
            "/etc/cloud/cloud.cfg.d/00-user.cfg": {"text": 'system_info:\n  default_user:\n    name: "debian"\n'},
            "/etc/resolv.conf": {"text": "# This file was created by osbuild\nnameserver 192.0.2.53\n"},
        },
        "changed": {
            "/etc/debian_version": {"mode": ["0644", "0600"]},
            "/usr/lib/os-release": {"uid": [0, apt_uid], "gid": [0, 65534]},
        },
    })
