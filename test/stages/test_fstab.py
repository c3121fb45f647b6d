"""org.osbuild.fstab: /etc/fstab lines from the manifest's file systems."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.fstab"
ROOT_UUID = "6e4ff95f-f662-45ee-a82a-bdf44a2d0b75"


def base_stages() -> list[dict[str, Any]]:
    """A tree with an /etc and no fstab."""
    return [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]


def fstab(*filesystems: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"filesystems": list(filesystems)}}


def test_fstab_lines(shared_store):
    stage = fstab(
        {"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "options": "errors=remount-ro", "passno": 1},
        {"uuid": "7B77-95E7", "path": "/boot/efi", "vfs_type": "vfat", "options": "umask=0077", "passno": 2},
        {"label": "data disk", "path": "/srv/my data", "vfs_type": "xfs", "freq": 1, "passno": 2},
        {"device": "/dev/vdb", "path": "none", "vfs_type": "swap", "options": "sw"},
        {"device": "tmpfs", "path": "/tmp", "vfs_type": "tmpfs"},
        {"partlabel": "var", "path": "/var", "vfs_type": "ext4", "passno": 2},
        # osbuild's default type.
        {"device": "/srv/image", "path": "/mnt", "options": "loop"},
    )
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {"/etc/fstab": {"type": "file", "mode": "0644", "uid": 0, "text": (
        f"UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1\n"
        "UUID=7B77-95E7\t/boot/efi\tvfat\tumask=0077\t0\t2\n"
        "LABEL=data\\040disk\t/srv/my\\040data\txfs\tdefaults\t1\t2\n"
        "/dev/vdb\tnone\tswap\tsw\t0\t0\n"
        "tmpfs\t/tmp\ttmpfs\tdefaults\t0\t0\n"
        "PARTLABEL=var\t/var\text4\tdefaults\t0\t2\n"
        "/srv/image\t/mnt\tnone\tloop\t0\t0\n"
    )}}})


def test_freq_and_passno_as_the_original_wrote_them(shared_store):
    # The original osbuild's samples give both as strings of digits; the line is the same as with numbers.
    stage = fstab({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "freq": "1", "passno": "01"})
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {"/etc/fstab": {"text": f"UUID={ROOT_UUID}\t/\text4\tdefaults\t1\t1\n"}}})


def test_fstab_replaces_the_old_table(shared_store):
    old = {"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/fstab", "text": "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"}]}}
    changes = stage_changes([*base_stages(), old], [fstab({"label": "root", "path": "/", "vfs_type": "ext4"})],
                            shared_store)
    assert_changes(changes, {"changed": {"/etc/fstab": {"lines": {
        "removed": ["# UNCONFIGURED FSTAB FOR BASE SYSTEM"], "added": ["LABEL=root\t/\text4\tdefaults\t0\t0"]}}}})


@pytest.mark.parametrize(("entry", "path"), [
    ({"path": "/", "vfs_type": "ext4"}, ".stages[0].options.filesystems[0]"),
    ({"uuid": ROOT_UUID, "label": "root", "path": "/", "vfs_type": "ext4"}, ".stages[0].options.filesystems[0]"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "dump": 0}, ".stages[0].options.filesystems[0]"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "freq": "one"}, ".stages[0].options.filesystems[0].freq"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "passno": "-1"}, ".stages[0].options.filesystems[0].passno"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "freq": 1.5}, ".stages[0].options.filesystems[0].freq"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "options": "defaults\n"},
     ".stages[0].options.filesystems[0].options"),
    ({"uuid": ROOT_UUID, "path": "/", "vfs_type": "ext4", "options": "rw, noatime"},
     ".stages[0].options.filesystems[0].options"),
    ({"uuid": "not a uuid", "path": "/", "vfs_type": "ext4"}, ".stages[0].options.filesystems[0].uuid"),
    ({"uuid": ROOT_UUID, "path": "root", "vfs_type": "ext4"}, ".stages[0].options.filesystems[0].path"),
    ({"uuid": ROOT_UUID}, ".stages[0].options.filesystems[0]"),
    ({"partlabel": "var", "label": "var", "path": "/var"}, ".stages[0].options.filesystems[0]"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, entry, path):
    assert_rejected(STAGE, {"filesystems": [entry]}, path, shared_store)
