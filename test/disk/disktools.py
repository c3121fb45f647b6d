"""The host tools the disk tests read images with, in one place: every call goes through `tool()`.

To read images with a build root's tools instead of the host's, change `tool()` (and only it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

SECTOR = 512


def tool(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one host tool, as a list of arguments; its output as text."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          env=dict(os.environ, **(env or {})))


def partition_table(disk: Path) -> dict[str, Any]:
    """`sfdisk --json`: the table's label, id and partitions (node names without the disk's path)."""
    table: dict[str, Any] = json.loads(tool("sfdisk", "--json", str(disk)).stdout)["partitiontable"]
    table.pop("device", None)
    for part in table.get("partitions", []):
        part["node"] = part["node"][len(str(disk)):]
    return table


def table_problems(disk: Path) -> str:
    """What `sfdisk --verify` finds wrong with the table (empty when nothing)."""
    proc = tool("sfdisk", "--verify", str(disk), check=False)
    out = proc.stdout + proc.stderr
    return "" if proc.returncode == 0 and "No errors detected" in out and "corrupt" not in out else out


def probe(disk: Path, start: int) -> dict[str, str]:
    """`blkid --probe` of the filesystem at sector `start`: TYPE, UUID, LABEL, ..."""
    out = tool("blkid", "--probe", "--offset", str(start * SECTOR), "--output", "export", str(disk)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("DEVNAME="))


def ext4_superblock(disk: Path, start: int) -> dict[str, str]:
    """dumpe2fs -h of the ext4 filesystem at sector `start`: its superblock's fields."""
    out = tool("dumpe2fs", "-h", f"{disk}?offset={start * SECTOR}").stdout
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in out.splitlines()) if value}


def ext4_cat(disk: Path, start: int, path: str) -> str:
    """A file's content in the ext4 filesystem at sector `start` (debugfs)."""
    return tool("debugfs", "-R", f"cat {path}", f"{disk}?offset={start * SECTOR}").stdout


def ext4_stat(disk: Path, start: int, path: str) -> str:
    return tool("debugfs", "-R", f"stat {path}", f"{disk}?offset={start * SECTOR}").stdout


def fat_listing(disk: Path, start: int) -> list[str]:
    """Every path in the FAT filesystem at sector `start`, with mtools (`mdir -/ -b`: bare names)."""
    out = tool("mdir", "-i", f"{disk}@@{start * SECTOR}", "-/", "-b", "::", env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    return sorted(line.strip()[len("::"):].rstrip("/") for line in out.splitlines() if line.strip())


def fat_dir(disk: Path, start: int, path: str) -> str:
    """`mdir` of one directory: volume label and serial, entries with their times."""
    return tool("mdir", "-i", f"{disk}@@{start * SECTOR}", "::" + path, env={"MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}).stdout


def fat_cat(disk: Path, start: int, path: str) -> str:
    return tool("mtype", "-i", f"{disk}@@{start * SECTOR}", "::" + path, env={"MTOOLS_SKIP_CHECK": "1"}).stdout


def fat_check(disk: Path, start: int, sectors: int, scratch: Path) -> str:
    """fsck.fat -n on a copy of the filesystem: its summary line; fails when fsck finds errors."""
    copy = scratch / "fat.img"
    with open(disk, "rb") as f:
        f.seek(start * SECTOR)
        copy.write_bytes(f.read(sectors * SECTOR))
    return tool("fsck.fat", "-n", str(copy)).stdout.strip().splitlines()[-1]


def xfs_superblock(disk: Path, start: int, scratch: Path, sectors: int) -> dict[str, str]:
    """xfs_db's `sb 0` fields (uuid, fname, ...) of the xfs filesystem at sector `start` (read from a copy)."""
    copy = scratch / "xfs.img"
    with open(disk, "rb") as f:
        f.seek(start * SECTOR)
        copy.write_bytes(f.read(sectors * SECTOR))
    out = tool("xfs_db", "-r", "-c", "sb 0", "-c", "print uuid fname", str(copy)).stdout
    return {key.strip(): value.strip() for key, _, value in (line.partition("=") for line in out.splitlines())}


def btrfs_superblock(image: Path) -> dict[str, str]:
    """`btrfs inspect-internal dump-super` fields of a btrfs filesystem image."""
    out = tool("btrfs", "inspect-internal", "dump-super", str(image)).stdout
    return dict(re.findall(r"^(\S+)[ \t]*(.*)$", out, re.MULTILINE))


def partition_file(disk: Path, start: int, count: int, copy: Path) -> Path:
    """The sectors of one partition copied into a file of their own, for tools that cannot read at an offset."""
    with open(disk, "rb") as f:
        f.seek(start * SECTOR)
        copy.write_bytes(f.read(count * SECTOR))
    return copy


def btrfs_restore(image: Path, out: Path) -> Path:
    """The files of a btrfs filesystem image, read without mounting (`btrfs restore`, symlinks and xattrs included)."""
    out.mkdir(parents=True, exist_ok=True)
    tool("btrfs", "restore", "-S", "-x", "-m", str(image), str(out))
    return out


def btrfs_check(image: Path) -> str:
    """`btrfs check` (read-only) of a btrfs filesystem image; fails when it finds errors."""
    proc = tool("btrfs", "check", "--readonly", str(image))
    return proc.stdout + proc.stderr


def btrfs_fs_tree(image: Path) -> str:
    """`btrfs inspect-internal dump-tree` of the top subvolume: its inodes, names, modes and extended attributes."""
    return tool("btrfs", "inspect-internal", "dump-tree", "-t", "fs", str(image)).stdout


def sectors(disk: Path, start: int, count: int) -> bytes:
    with open(disk, "rb") as f:
        f.seek(start * SECTOR)
        return f.read(count * SECTOR)


def grub_mkimage(output: Path, *args: str) -> bytes:
    """The host's grub-mkimage, for the bytes a stage's core.img must have."""
    tool("grub-mkimage", f"--output={output}", *args)
    return output.read_bytes()


def image_info(image: Path, fmt: str) -> dict[str, Any]:
    """qemu-img info of an image read as `fmt` (a fixed VHD is raw with a footer: qemu cannot tell it by its header)."""
    info: dict[str, Any] = json.loads(tool("qemu-img", "info", "-f", fmt, "--output=json", str(image)).stdout)
    return info


def convert_to_raw(image: Path, fmt: str, raw: Path) -> None:
    tool("qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw))
