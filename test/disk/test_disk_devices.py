"""The disk stages osbuild's way, as root: loop devices the engine attaches, an ext4 mount that
org.osbuild.copy fills (mount://), and the bytes compared with the mount-free way's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import disktools as dt
import pytest
from test_disk_stages import CONTENT, DISK, ESP, GPT, GRUB_INST, MKFS_EXT4, ROOT, ROOT_UUID, TRUNCATE, VOLID, build, image
from testlib import tree_input, v2_manifest, v2_stage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root")


def loopback(start: int | None = None, size: int | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"filename": DISK}
    if start is not None:
        options.update(start=start, size=size)
    return {"type": "org.osbuild.loopback", "options": options}


def on_device(stage: dict[str, Any], device: dict[str, Any], mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    stage = dict(stage, options={k: v for k, v in stage["options"].items() if k not in ("filename", "start", "size", "from")})
    stage["devices"] = {"device": device}
    if mounts:
        stage["mounts"] = mounts
    return stage


SFDISK_ON_DEVICE = on_device(GPT, loopback())
MKFS_EXT4_ON_DEVICE = on_device(dict(MKFS_EXT4, inputs={}), loopback(*ROOT))
COPY_INTO_MOUNT = v2_stage("org.osbuild.copy", inputs={"tree": tree_input("os")},
                           paths=[{"from": "input://tree/", "to": "mount://root/"}])
COPY_INTO_MOUNT["devices"] = {"root": loopback(*ROOT)}
COPY_INTO_MOUNT["mounts"] = [{"name": "root", "type": "org.osbuild.ext4", "source": "root", "target": "/"}]
DEVICE_STAGES = [TRUNCATE, SFDISK_ON_DEVICE, GRUB_INST, MKFS_EXT4_ON_DEVICE, COPY_INTO_MOUNT]


@pytest.fixture(scope="module")
def device_disk(shared_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(v2_manifest(CONTENT, image(*DEVICE_STAGES)), shared_store, tmp_path_factory.mktemp("dev")) / DISK


def test_sfdisk_on_a_loop_device_writes_the_table_it_writes_into_the_file(device_disk: Path, shared_store: Path,
                                                                       tmp_path: Path) -> None:
    in_file = build(v2_manifest(image(TRUNCATE, GPT)), shared_store, tmp_path) / DISK
    assert dt.partition_table(device_disk) == dt.partition_table(in_file)
    assert dt.table_problems(device_disk) == ""


def test_mkfs_ext4_on_a_device_and_copy_into_its_mount_fill_the_root_filesystem(device_disk: Path) -> None:
    probe = dt.probe(device_disk, ROOT[0])
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == ("ext4", ROOT_UUID, "root")
    assert dt.ext4_cat(device_disk, ROOT[0], "/etc/hostname") == "disk-test\n"
    assert "Mode:  0755" in dt.ext4_stat(device_disk, ROOT[0], "/usr/bin/hello")
    sb = dt.ext4_superblock(device_disk, ROOT[0])
    assert int(sb["Block count"]) * int(sb["Block size"]) == ROOT[1] * dt.SECTOR


def test_mkfs_fat_on_a_device_makes_the_bytes_it_makes_in_a_file_but_for_the_hidden_sectors(
        shared_store: Path, tmp_path: Path) -> None:
    fat = v2_stage("org.osbuild.mkfs.fat", inputs={"tree": tree_input("os")}, filename=DISK, start=ESP[0], size=ESP[1],
                   volid=VOLID, label="ESP", **{"from": "input://tree/boot/efi"})
    device = on_device(fat, loopback(*ESP))
    device["options"]["from"] = "input://tree/boot/efi"
    device["inputs"] = fat["inputs"]
    in_file = dt.sectors(build(v2_manifest(CONTENT, image(TRUNCATE, fat)), shared_store, tmp_path / "f") / DISK, *ESP)
    on_dev = dt.sectors(build(v2_manifest(CONTENT, image(TRUNCATE, device)), shared_store, tmp_path / "d") / DISK, *ESP)
    assert on_dev[0x1C:0x20] == bytes(4), "a device starts at its sector 0: no hidden sectors"
    assert on_dev[:0x1C] + on_dev[0x20:] == in_file[:0x1C] + in_file[0x20:]
    # This kernel has no vfat: the ESP cannot be mounted, so FAT content goes in with mtools only.

