"""org.osbuild.grub2: a static grub.cfg for BIOS boot, GRUB's modules in /boot/grub, /etc/default/grub."""

from __future__ import annotations

import hashlib
import subprocess
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, export_tree, stage_changes

STAGE = "org.osbuild.grub2"
UUID = "636c9a89-7d6c-424a-8538-46b791ae4895"
OLD, NEW = "6.1.0-9-amd64", "6.1.0-10-amd64"


def kernel_files(*versions: str, initrd: bool = True) -> dict[str, Any]:
    """Stand-ins for installed kernels: the stage only looks at their names."""
    files = []
    for version in versions:
        files.append({"path": f"/boot/vmlinuz-{version}", "text": "kernel\n"})
        if initrd:
            files.append({"path": f"/boot/initrd.img-{version}", "text": "initrd\n"})
    return {"name": "org.osbuild.copy", "options": {"files": files}}


def grub2(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": {"root_fs_uuid": UUID, **options}}


def grub_cfg(kernel: str, initrd: str, kernel_opts: str, timeout: int = 1) -> str:
    cmdline = f"root=UUID={UUID} ro {kernel_opts}".strip()
    return (
        "# Written by osbuild (org.osbuild.grub2).\n"
        f"set timeout={timeout}\n"
        "set default=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "insmod part_msdos\n"
        "insmod part_gpt\n"
        "insmod ext2\n"
        "insmod xfs\n"
        f"search --no-floppy --fs-uuid --set=root {UUID}\n"
        "menuentry 'Debian GNU/Linux' {\n"
        f"    linux {kernel} {cmdline}\n"
        f"    initrd {initrd}\n"
        "}\n"
    )


def default_grub(kernel_opts: str, timeout: int = 1) -> str:
    return (
        "# Written by osbuild (org.osbuild.grub2); read by update-grub.\n"
        f"GRUB_TIMEOUT={timeout}\n"
        f'GRUB_CMDLINE_LINUX="{kernel_opts}"\n'
        'GRUB_TERMINAL="serial console"\n'
        'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
    )


def assert_grub_reads(config: str, tmp_path) -> None:
    """GRUB's own parser accepts the configuration."""
    path = tmp_path / "grub.cfg"
    path.write_text(config)
    subprocess.run(["grub-script-check", str(path)], check=True)


@pytest.fixture(scope="module")
def with_grub_pc_bin(debian_base) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stages that add GRUB's BIOS modules (grub-pc-bin) and two stand-in kernels to the Debian base, and their sources."""
    lock = debian_base.lock_apt(["grub-pc-bin"])
    return [*lock["pipeline"]["stages"][1:], kernel_files(OLD, NEW)], lock["sources"]


def test_grub_on_debian_with_grub_pc_bin(debian_base, with_grub_pc_bin, shared_store, tmp_path):
    added, sources = with_grub_pc_bin
    before = debian_base.export(added, shared_store, sources=sources)
    changes = debian_base.changes([grub2(kernel_opts="console=ttyS0,115200")], shared_store,
                                  sources=sources, on=added)

    # Every module and list of the tree's grub-pc-bin, byte for byte; none of its images or tools.
    platform = before / "usr/lib/grub/i386-pc"
    copied = {f"/boot/grub/i386-pc/{path.name}": {"type": "file", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
              for path in [*platform.glob("*.mod"), *platform.glob("*.lst")]}
    assert "/boot/grub/i386-pc/search_fs_uuid.mod" in copied
    # The newest kernel by version: 6.1.0-10 sorts after 6.1.0-9.
    config = grub_cfg(f"/boot/vmlinuz-{NEW}", f"/boot/initrd.img-{NEW}", "console=ttyS0,115200")
    assert_changes(changes, {"added": {
        "/boot/grub": {"type": "dir"},
        "/boot/grub/grub.cfg": {"text": config, "mode": "0644", "uid": 0},
        "/boot/grub/i386-pc": {"type": "dir"},
        **copied,
        "/etc/default/grub": {"text": default_grub("console=ttyS0,115200"), "mode": "0644"},
    }})
    assert_grub_reads(config, tmp_path)


def test_debians_kernel_links_are_used_when_present(debian_base, with_grub_pc_bin, shared_store):
    added, sources = with_grub_pc_bin
    # What linux-base's postinst makes when a kernel is installed.
    links = {"name": "org.osbuild.script", "options": {"script": (
        f"ln -s boot/vmlinuz-{OLD} /vmlinuz\nln -s boot/initrd.img-{OLD} /initrd.img\n")}}
    changes = debian_base.changes([grub2(legacy=False, timeout=0)], shared_store, sources=sources,
                                  on=[*added, links])
    # The links, not the newest kernel in /boot: kernel upgrades in the image keep booting.
    assert_changes(changes, {"added": {
        "/boot/grub": {},
        "/boot/grub/grub.cfg": {"text": grub_cfg("/vmlinuz", "/initrd.img", "", timeout=0)},
        "/etc/default/grub": {"text": default_grub("", timeout=0)},
    }})


def bare(*stages: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/boot"}, {"path": "/etc"}]}}, *stages]


def test_tree_without_a_kernel_fails_clearly(shared_store):
    report = build_failure(bare(grub2()), shared_store)
    assert "error: no kernel in /boot: install one (e.g. linux-image-amd64) before this stage" in report


def test_kernel_without_initrd_fails_clearly(shared_store):
    report = build_failure(bare(kernel_files(NEW, initrd=False), grub2()), shared_store)
    assert f"error: kernel {NEW} has no /boot/initrd.img-{NEW}" in report


def test_tree_without_grub_modules_fails_clearly(shared_store):
    report = build_failure(bare(kernel_files(NEW), grub2()), shared_store)
    assert "error: no GRUB modules for i386-pc in /usr/lib/grub: install grub-pc-bin in the tree" in report


def test_without_modules_only_the_configuration_is_written(shared_store, tmp_path):
    stage = grub2(legacy=False, terminal=["console"], title="My OS", kernel_opts="quiet")
    changes = stage_changes(bare(kernel_files(NEW)), [stage], shared_store)
    config = changes["added"]["/boot/grub/grub.cfg"]["text"]
    assert_changes(changes, {"added": {"/boot/grub": {}, "/boot/grub/grub.cfg": {}, "/etc/default": {"mode": "0755"},
                                       "/etc/default/grub": {}}})
    # No serial line with the console terminal alone.
    assert "serial" not in config
    assert "terminal_output console\n" in config
    assert "menuentry 'My OS' {\n" in config
    assert f"    linux /boot/vmlinuz-{NEW} root=UUID={UUID} ro quiet\n" in config
    assert_grub_reads(config, tmp_path)


@pytest.mark.parametrize(("options", "path"), [
    ({}, ".stages[0].options"),
    ({"root_fs_uuid": "root"}, ".stages[0].options.root_fs_uuid"),
    ({"root_fs_uuid": UUID, "legacy": "x86_64-efi"}, ".stages[0].options.legacy"),
    ({"root_fs_uuid": UUID, "terminal": []}, ".stages[0].options.terminal"),
    ({"root_fs_uuid": UUID, "title": "it's"}, ".stages[0].options.title"),
    ({"root_fs_uuid": UUID, "serial": "serial; reboot"}, ".stages[0].options.serial"),
    ({"root_fs_uuid": UUID, "timeout": -1}, ".stages[0].options.timeout"),
    ({"root_fs_uuid": UUID, "uefi": True}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def rpm_tree(database: str = "/usr/lib/sysimage/rpm") -> list[dict[str, Any]]:
    """A tree that looks like an RPM system's: an rpm database directory, GRUB's modules and font, a BLS entry."""
    return [
        {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": database, "parents": True}]}},
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": "/usr/lib/grub/i386-pc/normal.mod", "text": "module\n"},
            {"path": "/usr/lib/grub/i386-pc/blscfg.mod", "text": "module\n"},
            {"path": "/usr/lib/grub/i386-pc/command.lst", "text": "*blscfg: blscfg\n"},
            {"path": "/usr/lib/grub/i386-pc/fdt.lst", "text": "\n"},
            {"path": "/usr/lib/grub/i386-pc/boot.img", "text": "boot code\n"},
            {"path": "/usr/share/grub/unicode.pf2", "text": "font\n"},
            {"path": "/boot/loader/entries/fedora-5.3.7.conf", "text": "linux /boot/vmlinuz-5.3.7\noptions $kernelopts\n"},
        ]}},
    ]


@pytest.mark.parametrize("database", ["/usr/lib/sysimage/rpm", "/var/lib/rpm"])
def test_fedora_layout_on_an_rpm_tree(shared_store, database):
    changes = stage_changes(rpm_tree(database), [grub2(kernel_opts="ro biosdevname=0 net.ifnames=0")], shared_store)
    env = (f"# GRUB Environment Block\nGRUB2_ROOT_FS_UUID={UUID}\nGRUB2_BOOT_FS_UUID={UUID}\n"
           f"kernelopts=root=UUID={UUID} ro biosdevname=0 net.ifnames=0\n")
    assert_changes(changes, {"added": {
        "/boot/grub2": {"type": "dir"},
        "/boot/grub2/grubenv": {"text": env + "#" * (1024 - len(env)), "size": 1024},
        "/boot/grub2/grub.cfg": {"text": (
            "# Written by osbuild (org.osbuild.grub2).\nset timeout=0\nload_env\n"
            "search --no-floppy --fs-uuid --set=root ${GRUB2_ROOT_FS_UUID}\n"
            "search --no-floppy --fs-uuid --set=boot ${GRUB2_BOOT_FS_UUID}\n"
            "function load_video {\n  insmod all_video\n}\nblscfg\n")},
        "/boot/grub2/i386-pc": {"type": "dir"},
        "/boot/grub2/i386-pc/normal.mod": {"text": "module\n"},
        "/boot/grub2/i386-pc/blscfg.mod": {"text": "module\n"},
        "/boot/grub2/i386-pc/command.lst": {"text": "*blscfg: blscfg\n"},
        "/boot/grub2/fonts": {"type": "dir"},
        "/boot/grub2/fonts/unicode.pf2": {"text": "font\n"},
        "/etc": {"type": "dir"},
        "/etc/default": {"type": "dir"},
        "/etc/default/grub": {"text": "GRUB_TIMEOUT=0\nGRUB_ENABLE_BLSCFG=true\n"},
    }})


def test_grubenv_reads_back_with_grub_editenv(shared_store):
    tree = export_tree([*rpm_tree(), grub2(kernel_opts="quiet", timeout=5)], shared_store)
    listed = subprocess.run(["grub-editenv", str(tree / "boot/grub2/grubenv"), "list"], capture_output=True, text=True,
                            check=True).stdout
    assert listed.splitlines() == [f"GRUB2_ROOT_FS_UUID={UUID}", f"GRUB2_BOOT_FS_UUID={UUID}",
                                   f"kernelopts=root=UUID={UUID} quiet"]
    assert "set timeout=5\n" in (tree / "boot/grub2/grub.cfg").read_text()
    assert not (tree / "boot/grub").exists()
