"""The default Debian image and every disk format: built from the mirror, bytes checked, booted in qemu.

Slow: the tree takes a minute or two to build (once per session, in the shared store)
and every boot under software emulation about a minute.
"""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, build_json, run_osbuild

pytestmark = [pytest.mark.image]

BOOT_TEST = REPO / "tools/osbuild-boot-test"
QEMU_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vpc": "vpc", "vhdx": "vhdx"}
EXT4_MAGIC = 0xEF53
XFS_MAGIC = b"XFSB"


def variant(locked: dict[str, Any], fmt: str, pttype: str, fs_type: str) -> dict[str, Any]:
    """The sample with another disk format, partition table or root filesystem."""
    manifest = copy.deepcopy(locked)
    pipeline = manifest["pipeline"]
    for stage in pipeline["stages"]:
        if stage["name"] == "org.osbuild.initramfs-tools":
            stage["options"]["fstype"] = fs_type
            if fs_type not in stage["options"]["include"]:
                stage["options"]["include"].append(fs_type)
        if stage["name"] == "org.osbuild.fstab":
            stage["options"]["filesystems"][0]["vfs_type"] = fs_type
    options = pipeline["assembler"]["options"]
    options.update(format=fmt, filename=f"disk.{fmt}", pttype=pttype, fs_type=fs_type)
    return manifest


def image_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True)
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def as_raw(path: Path, fmt: str, tmp: Path) -> Path:
    raw = tmp / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(raw)], check=True)
    return raw


def partitions(raw: Path) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "--json", str(raw)], check=True, capture_output=True, text=True)
    table: dict[str, Any] = json.loads(out.stdout)["partitiontable"]
    return table


def filesystem_uuid(raw: Path, offset: int, fs_type: str) -> str:
    """The UUID in the root filesystem's superblock, read from the disk's bytes."""
    with open(raw, "rb") as f:
        if fs_type == "ext4":
            f.seek(offset + 1024)
            block = f.read(1024)
            assert struct.unpack_from("<H", block, 0x38)[0] == EXT4_MAGIC, "no ext4 superblock at the partition"
            raw_uuid = block[0x68:0x78]
        else:
            f.seek(offset)
            block = f.read(512)
            assert block[:4] == XFS_MAGIC, "no xfs superblock at the partition"
            raw_uuid = block[32:48]
    h = raw_uuid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def boot(image: Path, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BOOT_TEST), str(image), "--log", str(log), "--timeout", "600", *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.boot
def test_default_image_builds_boots_and_rebuilds_nothing(locked_sample: dict[str, Any], shared_store: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = build_json(locked_sample, shared_store, "--output-directory", str(out), "--export", "assembler")
    assert result["success"]
    image = out / "assembler/debian-bookworm.qcow2"
    info = image_info(image)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 2 * 1024**3
    packages = {p["name"] for p in result["metadata"]["tree"]["org.osbuild.debian.bootstrap"]["packages"]}
    assert {"systemd-sysv", "udev", "grub-pc-bin"} <= packages
    kernel = {p["name"] for p in result["metadata"]["tree"]["org.osbuild.apt"]["packages"]}
    assert "linux-image-amd64" in kernel
    booted = boot(image, tmp_path / "console.log", "--login", "root:osbuild")
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert "PASS" in booted.stdout and "running" in booted.stdout and "root logged in" in booted.stdout
    refused = boot(image, tmp_path / "refused.log", "--login", "root:not-the-password")
    assert refused.returncode == 1 and "login as root failed" in refused.stdout, refused.stdout + refused.stderr
    again = build_json(locked_sample, shared_store, "--output-directory", str(tmp_path / "out2"), "--export", "assembler")
    statuses = {s["status"] for p in again["pipelines"].values() for s in p["stages"]}
    assert statuses == {"cached"}


@pytest.mark.boot
@pytest.mark.parametrize(("fmt", "pttype", "fs_type"), [
    ("raw", "gpt", "ext4"),
    ("vmdk", "dos", "xfs"),
    ("vdi", "gpt", "xfs"),
    ("vpc", "dos", "ext4"),
    ("vhdx", "gpt", "ext4"),
    ("qcow2", "gpt", "xfs"),
])
def test_disk_format_bytes_and_boot(locked_sample: dict[str, Any], shared_store: Path, tmp_path: Path,
                                    fmt: str, pttype: str, fs_type: str) -> None:
    manifest = variant(locked_sample, fmt, pttype, fs_type)
    out = tmp_path / "out"
    run_osbuild("--store", str(shared_store), "--output-directory", str(out), "--export", "assembler", manifest=manifest)
    image = out / f"assembler/disk.{fmt}"
    info = image_info(image)
    assert info["format"] == QEMU_FORMATS[fmt]
    assert info["virtual-size"] >= 2 * 1024**3
    raw = as_raw(image, fmt, tmp_path)
    table = partitions(raw)
    assert table["label"] == pttype
    root = table["partitions"][-1]
    if pttype == "gpt":
        assert table["partitions"][0]["type"] == "21686148-6449-6E6F-744E-656564454649"  # BIOS boot
    else:
        assert root.get("bootable") is True
    uuid = manifest["pipeline"]["assembler"]["options"]["root_fs_uuid"]
    assert filesystem_uuid(raw, root["start"] * 512, fs_type) == uuid
    raw.unlink()
    booted = boot(image, tmp_path / "console.log")
    assert booted.returncode == 0, booted.stdout + booted.stderr
