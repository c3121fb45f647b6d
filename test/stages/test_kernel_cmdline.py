"""org.osbuild.kernel-cmdline: /etc/kernel/cmdline, and GRUB_CMDLINE_LINUX on a Debian tree with GRUB."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.kernel-cmdline"
UUID = "76a22bf4-f153-4541-b6c7-0332c0dfaeac"
# The head of what grub2-common installs as /etc/default/grub.
DEFAULT_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
"""


def debian_with_grub() -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/debian_version", "text": "12.5\n"},
        {"path": "/etc/default/grub", "text": DEFAULT_GRUB},
    ]}}]


def other_tree() -> list[dict[str, Any]]:
    """Not Debian's, but with a /etc/default/grub (Fedora's has one too; its entries come from kernel-install)."""
    return [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/default/grub", "text": DEFAULT_GRUB}]}}]


def cmdline(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": options}


def test_cmdline_file_has_root_then_options(shared_store):
    changes = stage_changes(other_tree(), [cmdline(root_fs_uuid=UUID, kernel_opts="net.ifnames=0 console=ttyS0")],
                            shared_store)
    assert_changes(changes, {"added": {
        "/etc/kernel": {"type": "dir", "mode": "0755"},
        "/etc/kernel/cmdline": {"text": f"root=UUID={UUID} net.ifnames=0 console=ttyS0\n", "mode": "0644"},
    }})


def test_debian_grub_defaults_get_the_options_without_root(shared_store):
    stage = cmdline(root_fs_uuid=UUID, kernel_opts='console=ttyS0 x="a b"')
    changes = stage_changes(debian_with_grub(), [stage], shared_store)
    assert_changes(changes, {
        "added": {"/etc/kernel": {"type": "dir"},
                  "/etc/kernel/cmdline": {"text": f'root=UUID={UUID} console=ttyS0 x="a b"\n'}},
        "changed": {"/etc/default/grub": {"lines": {"removed": ['GRUB_CMDLINE_LINUX=""'],
                                                    "added": ['GRUB_CMDLINE_LINUX="console=ttyS0 x=\\"a b\\""']}}},
    })


def test_debian_without_grub_gets_only_the_cmdline_file(shared_store):
    base = [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/debian_version", "text": "12.5\n"}]}}]
    changes = stage_changes(base, [cmdline(root_fs_uuid="6699-AFB5")], shared_store)
    assert_changes(changes, {"added": {"/etc/kernel": {"type": "dir"},
                                       "/etc/kernel/cmdline": {"text": "root=UUID=6699-AFB5\n"}}})


def test_a_line_over_the_limit_fails(shared_store):
    report = build_failure([*other_tree(), cmdline(kernel_opts="x" * 300, kernel_cmdline_size=256)], shared_store)
    assert "error: the kernel command line is 300 bytes, more than 256" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"root_fs_uuid": UUID, "kernel_options": "quiet"}, ".stages[0].options"),
    ({"root_fs_uuid": "not-a-uuid"}, ".stages[0].options.root_fs_uuid"),
    ({"kernel_opts": ["quiet"]}, ".stages[0].options.kernel_opts"),
    ({"kernel_opts": "quiet\nGRUB_X=1"}, ".stages[0].options.kernel_opts"),
    ({"kernel_cmdline_size": 100}, ".stages[0].options.kernel_cmdline_size"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
