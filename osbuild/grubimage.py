"""GRUB's boot images, made with grub-mkimage and written into a disk file without a device.

Stages and assemblers import this inside the sandbox: standard library only,
Python 3.9 syntax.

    mkimage(directory, fmt, output, prefix=..., modules=[...], early_config=None, binary="grub-mkimage")
    early_config(root_uuid)                   text that finds the root filesystem by UUID, sets prefix
    install_bios(disk, boot_img, core, core_sector, limit)

BIOS: boot.img's first 440 bytes go to sector 0 (the disk signature and the
partition table after them stay), patched to load core.img from `core_sector`,
to boot from the drive the BIOS booted and to skip the floppy probe; core.img
goes to `core_sector` (the gap after a dos table, or a GPT BIOS boot
partition), its first sector patched with the block list of the rest. This
is what grub-install does on a device. grub-mkimage's output is the same for
the same inputs (measured: equal sha256 for core.img and BOOTX64.EFI).
"""

from __future__ import annotations

import os
import struct
import subprocess
from typing import Optional

from osbuild.api import StageError

SECTOR = 512
BOOT_CODE_SIZE = 440
# Offsets in boot.img (sector 0) and in the first sector of core.img (diskboot.img).
KERNEL_SECTOR = 0x5C
BOOT_DRIVE = 0x64
DRIVE_CHECK = 0x66
BLOCKLIST = SECTOR - 12
# Modules a filesystem or partition table needs in GRUB.
FS_MODULES = {"ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs", "fat": "fat", "iso9660": "iso9660"}
PT_MODULES = {"dos": "part_msdos", "mbr": "part_msdos", "gpt": "part_gpt"}


def early_config(root_uuid: str) -> str:
    """An embedded config that finds the root filesystem by UUID and reads /boot/grub from it."""
    return f"search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n"


def mkimage(directory: str, fmt: str, output: str, *, prefix: str, modules: list[str],
            early: Optional[str] = None, binary: str = "grub-mkimage", root: Optional[str] = None) -> bytes:
    """Run grub-mkimage with the modules of `directory` (e.g. TREE/usr/lib/grub/i386-pc); the image's bytes.

    With `root` (a tree holding `directory` and `output`), the tree's own grub-mkimage runs chrooted
    into it, so the tool is the version of the modules whatever the build root's GRUB is.
    """
    if not os.path.isfile(os.path.join(directory, "kernel.img")):
        raise StageError(f"no GRUB modules in {directory}: install the GRUB package for that platform")

    def inside(path: str) -> str:
        return "/" + os.path.relpath(path, root) if root is not None else path

    argv = [binary, f"--directory={inside(directory)}", f"--format={fmt}", f"--output={inside(output)}",
            f"--prefix={prefix}"]
    if early is not None:
        config = output + ".early.cfg"
        with open(config, "w", encoding="utf-8") as f:
            f.write(early)
        argv.append(f"--config={inside(config)}")
    argv += modules
    if root is not None:
        argv = ["chroot", root, *argv]
    print("+ " + " ".join(argv), flush=True)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise StageError(f"{binary}: not found in the build root") from None
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, end="", flush=True)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise StageError(f"{binary} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    with open(output, "rb") as image:
        return image.read()


def install_bios(disk: str, boot_img: str, core: bytes, core_sector: int, limit: int) -> None:
    """Write boot.img's code to sector 0 and core.img at core_sector, patched to find each other.

    `limit` is the first sector core.img must not reach (where the next partition starts).
    """
    sectors = (len(core) + SECTOR - 1) // SECTOR
    if core_sector < 1:
        raise StageError(f"GRUB's core.img cannot go to sector {core_sector}: sector 0 holds the boot code")
    if core_sector + sectors > limit:
        raise StageError(f"GRUB's core.img ({sectors} sectors) does not fit between sector {core_sector} and {limit}")
    patched = bytearray(core)
    # The first sector of core.img loads the rest from this block list.
    struct.pack_into("<QH", patched, BLOCKLIST, core_sector + 1, sectors - 1)
    try:
        with open(boot_img, "rb") as f:
            boot = bytearray(f.read(BOOT_CODE_SIZE))
    except FileNotFoundError:
        raise StageError(f"no {boot_img}: install grub-pc-bin") from None
    struct.pack_into("<Q", boot, KERNEL_SECTOR, core_sector)
    boot[BOOT_DRIVE] = 0xFF                          # boot from the drive the BIOS booted
    boot[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"  # a hard disk: skip the floppy probe
    with open(disk, "r+b") as f:
        if f.seek(0, os.SEEK_END) < (core_sector + sectors) * SECTOR:
            raise StageError(f"{os.path.basename(disk)} is too small for core.img at sector {core_sector}")
        f.seek(0)
        f.write(boot)
        f.seek(core_sector * SECTOR)
        f.write(patched)
