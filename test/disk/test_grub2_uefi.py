"""org.osbuild.grub2 in format 2 with `uefi`: BOOTX64.EFI for the ESP and one grub.cfg for both firmwares.

The tree is small: stand-in kernels and GRUB's module directories, copied from the build root
(the host) by a test stage, instead of a Debian tree with grub-pc-bin and grub-efi-amd64-bin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import disktools as dt
from conftest import REPO
from testlib import Library, v2_manifest, v2_pipeline, v2_stage

UUID = "636c9a89-7d6c-424a-8538-46b791ae4895"
GRUB_MODULES = "org.osbuild.test.grub-modules"
GRUB_MODULES_BODY = '''
def main(tree, options):
    for platform in ("i386-pc", "x86_64-efi"):
        shutil.copytree(f"/usr/lib/grub/{platform}", f"{tree}/usr/lib/grub/{platform}")
'''
EFI_MODULES = ["part_gpt", "part_msdos", "fat", "ext2", "xfs", "search", "search_fs_uuid", "normal", "linux",
               "boot", "echo", "test", "serial", "terminal", "configfile", "efi_gop"]


def test_grub2_with_uefi_makes_bootx64_efi_and_one_grub_cfg(lib: Library, tmp_path: Path) -> None:
    for name in ("org.osbuild.grub2", "org.osbuild.copy"):
        for suffix in ("", ".meta.json"):
            shutil.copy2(REPO / "stages" / (name + suffix), lib.root / "stages" / (name + suffix))
    lib.stage(GRUB_MODULES, "import shutil\n" + GRUB_MODULES_BODY)
    kernels = v2_stage("org.osbuild.copy", files=[{"path": "/boot/vmlinuz-6.1.0-9-amd64", "text": "kernel\n"},
                                                  {"path": "/boot/initrd.img-6.1.0-9-amd64", "text": "initrd\n"}])
    grub2 = v2_stage("org.osbuild.grub2", root_fs_uuid=UUID, kernel_opts="console=ttyS0,115200", uefi={"vendor": "debian"})
    tree = lib.build_tree(v2_manifest(v2_pipeline("os", v2_stage(GRUB_MODULES), kernels, grub2)), tmp_path / "store",
                          tmp_path / "out", export="os")
    efi = (tree / "boot/efi/EFI/BOOT/BOOTX64.EFI").read_bytes()
    early = tmp_path / "early.cfg"
    early.write_text(f"search.fs_uuid {UUID} root\nset prefix=($root)/boot/grub\n")
    expected = dt.grub_mkimage(tmp_path / "BOOTX64.EFI", "--directory=/usr/lib/grub/x86_64-efi", "--format=x86_64-efi",
                               "--prefix=/boot/grub", f"--config={early}", *EFI_MODULES)
    assert efi[:2] == b"MZ" and efi == expected, "GRUB for x86_64-efi, all it needs built in, finding the root by UUID"
    assert (tree / "boot/efi/EFI/debian/grub.cfg").read_text() == (
        f"search --no-floppy --fs-uuid --set=root {UUID}\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n")
    config = (tree / "boot/grub/grub.cfg").read_text()
    assert ('if [ "$grub_platform" = pc ]; then\n    serial --unit=0 --speed=115200\n'
            "    terminal_input serial console\n    terminal_output serial console\nfi\n") in config
    assert "    linux /boot/vmlinuz-6.1.0-9-amd64 root=UUID=" + UUID + " ro console=ttyS0,115200\n" in config
    dt.tool("grub-script-check", str(tree / "boot/grub/grub.cfg"))
    assert (tree / "boot/grub/i386-pc/normal.mod").is_file(), "BIOS keeps its modules in /boot/grub"
