"""org.osbuild.mkfs.btrfs both ways: in a partition of a disk file from a tree (mkfs.btrfs --rootdir, rootless),
and osbuild's way as root (a loop device, then org.osbuild.copy into an org.osbuild.btrfs mount). The bytes
are read back with btrfs-progs without mounting (disktools.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import disktools as dt
import pytest
from conftest import assert_rejected
from test_disk_devices import loopback, on_device
from test_disk_stages import CONTENT, DISK, LINUX_GUID, TABLE_ID, build, failure, image, sfdisk, v2_rejected
from testlib import tree_input, v2_manifest, v2_stage

from osbuild.fsimage import btrfs_device_uuid

BTRFS_UUID = "3ad5e8a4-6bde-4e3c-9f4f-0b6a2f8a51c7"
PART = (2048, 262144)   # 128 MiB: btrfs-progs 6.2 makes no filesystem from a tree under 109 MiB
TRUNCATE = v2_stage("org.osbuild.truncate", filename=DISK, size="160M")
GPT = sfdisk(label="gpt", uuid=TABLE_ID, partitions=[{"start": PART[0], "size": PART[1], "type": LINUX_GUID}])
MKFS = v2_stage("org.osbuild.mkfs.btrfs", inputs={"tree": tree_input("os")}, filename=DISK, start=PART[0], size=PART[1],
                uuid=BTRFS_UUID, label="root", metadata="dup", **{"from": "input://tree/"})


def filesystem(disk: Path, scratch: Path) -> Path:
    return dt.partition_file(disk, *PART, scratch / "btrfs.img")


@pytest.fixture(scope="module")
def disk(shared_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(v2_manifest(CONTENT, image(TRUNCATE, GPT, MKFS)), shared_store, tmp_path_factory.mktemp("btrfs")) / DISK


def test_mkfs_btrfs_makes_the_filesystem_with_the_manifests_uuid_and_label_in_its_partition(disk: Path,
                                                                                             tmp_path: Path) -> None:
    fs = filesystem(disk, tmp_path)
    sb = dt.btrfs_superblock(fs)
    assert (sb["fsid"], sb["label"]) == (BTRFS_UUID, "root")
    assert int(sb["total_bytes"]) == PART[1] * dt.SECTOR, "the filesystem fills its partition, no more"
    assert int(sb["num_devices"]) == 1
    probe = dt.probe(disk, PART[0])
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == ("btrfs", BTRFS_UUID, "root")
    assert dt.table_problems(disk) == "", "nothing was written over the table or its backup"
    assert "no error found" in dt.btrfs_check(fs)


def test_mkfs_btrfs_pins_the_device_uuid_where_btrfs_progs_can(disk: Path, tmp_path: Path) -> None:
    help_text = dt.tool("mkfs.btrfs", "--help", check=False)
    if "--device-uuid" not in help_text.stdout + help_text.stderr:
        pytest.skip("this host's btrfs-progs (before 6.5.3) makes the device UUID up")
    assert dt.btrfs_superblock(filesystem(disk, tmp_path))["dev_item.uuid"] == btrfs_device_uuid(BTRFS_UUID)


def test_mkfs_btrfs_copies_the_tree_in(disk: Path, tmp_path: Path) -> None:
    files = dt.btrfs_restore(filesystem(disk, tmp_path), tmp_path / "restored")
    assert (files / "etc/hostname").read_text() == "disk-test\n"
    assert (files / "usr/bin/hello").stat().st_mode & 0o7777 == 0o755
    assert (files / "boot/efi/EFI/debian/grub.cfg").read_text() == "configfile (hd0,gpt3)/boot/grub/grub.cfg\n"


def test_mkfs_btrfs_keeps_owners_setuid_bits_hard_links_and_symlinks(shared_store: Path, tmp_path: Path) -> None:
    content = v2_pipeline_with(
        v2_stage("org.osbuild.copy", files=[{"path": "/srv/a", "text": "a\n", "mode": 0o4711}]),
        v2_stage("org.osbuild.chown", items={"/srv/a": {"user": 1000, "group": 1001}}),
        v2_stage("org.osbuild.chmod", items={"/srv/a": {"mode": "4711"}}),   # chown cleared the setuid bit
        v2_stage("org.osbuild.ln", paths=[{"target": "/srv/a", "link_name": "tree:///srv/b"},
                                          {"target": "a", "link_name": "tree:///srv/link", "symbolic": True}]))
    disk = build(v2_manifest(content, image(TRUNCATE, GPT, MKFS)), shared_store, tmp_path) / DISK
    fs = filesystem(disk, tmp_path)
    assert "mode 104711 links 2 uid 1000 gid 1001" in dt.btrfs_fs_tree(fs), "one inode, two names, its owner and mode"
    files = dt.btrfs_restore(fs, tmp_path / "restored")
    assert os.readlink(files / "srv/link") == "a"
    assert (files / "srv/b").read_text() == "a\n"


def v2_pipeline_with(*stages: dict[str, Any]) -> dict[str, Any]:
    """The content pipeline `os` with more stages."""
    return dict(CONTENT, stages=[*CONTENT["stages"], *stages])


def test_mkfs_btrfs_without_from_makes_an_empty_filesystem(shared_store: Path, tmp_path: Path) -> None:
    empty = v2_stage("org.osbuild.mkfs.btrfs", filename=DISK, start=PART[0], size=PART[1], uuid=BTRFS_UUID)
    fs = filesystem(build(v2_manifest(image(TRUNCATE, GPT, empty)), shared_store, tmp_path) / DISK, tmp_path)
    assert dt.btrfs_superblock(fs)["label"] == ""
    assert "no error found" in dt.btrfs_check(fs)
    assert list(dt.btrfs_restore(fs, tmp_path / "restored").iterdir()) == []


def test_a_partition_too_small_for_the_filesystem_is_refused_not_overrun(shared_store: Path) -> None:
    small = dict(MKFS, options=dict(MKFS["options"], size=65536))
    report = failure(v2_manifest(CONTENT, image(TRUNCATE, GPT, small)), shared_store)
    assert "error: btrfs: the filesystem does not fit in 65536 sectors (mkfs.btrfs needed " in report


@pytest.mark.parametrize(("options", "path"), [
    ({"colour": "red"}, ".options"),
    ({"metadata": "raid1"}, ".options.metadata"),
    ({"label": "x" * 256}, ".options.label"),
    ({"uuid": "not-a-uuid"}, ".options.uuid"),
])
def test_bad_options_are_refused_before_anything_runs(options: dict[str, Any], path: str, shared_store: Path) -> None:
    stage = v2_stage("org.osbuild.mkfs.btrfs", filename=DISK, **{"uuid": BTRFS_UUID, **options})
    v2_rejected(v2_manifest(image(TRUNCATE, stage)), f".pipelines[0].stages[1]{path}", shared_store)


def test_format_1_refuses_unknown_options_too(shared_store: Path) -> None:
    assert_rejected("org.osbuild.mkfs.btrfs", {"uuid": BTRFS_UUID, "filename": DISK, "from": "input://tree/"},
                    ".stages[0].options", shared_store)


def test_the_btrfs_mount_refuses_unknown_options(shared_store: Path) -> None:
    copy = v2_stage("org.osbuild.copy", paths=[{"from": "tree:///disk.raw", "to": "mount://root/"}])
    copy["devices"] = {"root": loopback(*PART)}
    copy["mounts"] = [{"name": "root", "type": "org.osbuild.btrfs", "source": "root", "target": "/",
                       "options": {"space_cache": "v1"}}]
    v2_rejected(v2_manifest(image(TRUNCATE, copy)), ".pipelines[0].stages[1].mounts[0].options", shared_store)


@pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")
def test_osbuilds_way_mkfs_on_a_loop_device_then_copy_into_a_btrfs_mount(shared_store: Path, tmp_path: Path) -> None:
    mkfs = on_device(dict(MKFS, inputs={}), loopback(*PART))
    copy = v2_stage("org.osbuild.copy", inputs={"tree": tree_input("os")},
                    paths=[{"from": "input://tree/", "to": "mount://root/"}])
    copy["devices"] = {"root": loopback(*PART)}
    copy["mounts"] = [{"name": "root", "type": "org.osbuild.btrfs", "source": "root", "target": "/",
                       "options": {"compress": "zstd:3"}}]
    disk = build(v2_manifest(CONTENT, image(TRUNCATE, on_device(GPT, loopback()), mkfs, copy)), shared_store, tmp_path) / DISK
    assert_holds_the_content(filesystem(disk, tmp_path), tmp_path)
    assert dt.table_problems(disk) == ""


def assert_holds_the_content(fs: Path, scratch: Path) -> None:
    """The filesystem has the manifest's ids, checks clean, and holds CONTENT's files (read back without a mount)."""
    sb = dt.btrfs_superblock(fs)
    assert (sb["fsid"], sb["label"], int(sb["total_bytes"])) == (BTRFS_UUID, "root", PART[1] * dt.SECTOR)
    assert "no error found" in dt.btrfs_check(fs)
    files = dt.btrfs_restore(fs, scratch / "restored")
    assert (files / "etc/hostname").read_text() == "disk-test\n"
    assert (files / "usr/bin/hello").stat().st_mode & 0o7777 == 0o755
