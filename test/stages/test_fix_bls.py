"""org.osbuild.fix-bls: BLS entries' paths through the build's tree rewritten to /boot (or a prefix)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.fix-bls"
ENTRY = "/boot/loader/entries/0123-5.3.7-301.fc31.x86_64.conf"
WRITTEN = (
    "title Fedora (5.3.7-301.fc31.x86_64) 31 (Thirty One)\n"
    "version 5.3.7-301.fc31.x86_64\n"
    "linux /run/osbuild/tree/boot/vmlinuz-5.3.7-301.fc31.x86_64\n"
    "initrd /run/osbuild/tree/boot/initramfs-5.3.7-301.fc31.x86_64.img\n"
    "options $kernelopts\n"
    "grub_users $grub_users\n"
)
GOOD = "title Debian\nlinux /boot/vmlinuz\ninitrd /boot/initrd.img\n"


def base_stages() -> list[dict[str, Any]]:
    """Entries as grub2-mkrelpath writes them in a sandbox, one that is right already, and a file that is no entry."""
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": ENTRY, "text": WRITTEN, "mode": 0o600},
        {"path": "/boot/loader/entries/good.conf", "text": GOOD},
        {"path": "/boot/loader/entries/notes.txt", "text": "linux /run/osbuild/tree/boot/x\n"},
    ]}}]


def test_paths_of_the_tree_become_boot(shared_store):
    changes = stage_changes(base_stages(), [{"name": STAGE}], shared_store)
    assert_changes(changes, {"changed": {ENTRY: {"lines": {
        "removed": ["linux /run/osbuild/tree/boot/vmlinuz-5.3.7-301.fc31.x86_64",
                    "initrd /run/osbuild/tree/boot/initramfs-5.3.7-301.fc31.x86_64.img"],
        "added": ["linux /boot/vmlinuz-5.3.7-301.fc31.x86_64", "initrd /boot/initramfs-5.3.7-301.fc31.x86_64.img"],
    }}}})
    # The entry keeps its mode.
    assert "mode" not in changes["changed"][ENTRY]


def test_a_boot_partition_of_its_own_gets_an_empty_prefix(shared_store):
    changes = stage_changes(base_stages(), [{"name": STAGE, "options": {"prefix": ""}}], shared_store)
    assert changes["changed"][ENTRY]["lines"]["added"] == [
        "linux /vmlinuz-5.3.7-301.fc31.x86_64", "initrd /initramfs-5.3.7-301.fc31.x86_64.img"]
    assert sorted(changes["changed"]) == [ENTRY]


def test_a_tree_without_entries_is_left_alone(shared_store):
    changes = stage_changes([{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/boot"}]}}],
                            [{"name": STAGE}], shared_store)
    assert_changes(changes, {})


@pytest.mark.parametrize(("options", "path"), [
    ({"prefix": "boot"}, ".stages[0].options.prefix"),
    ({"prefix": "/boot", "require_boot_prefix": True}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
