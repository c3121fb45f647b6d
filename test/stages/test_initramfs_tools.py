"""org.osbuild.initramfs-tools: initramfs-tools' settings, and a rebuilt initramfs when a kernel is installed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

from osbuild.treediff import diff

STAGE = "org.osbuild.initramfs-tools"
CONF_HEADER = "# Written by osbuild (org.osbuild.initramfs-tools).\n"
MODULES_HEADER = "# Modules for the initramfs, written by osbuild (org.osbuild.initramfs-tools).\n"
VM_MODULES = ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ext4"]


def base_stages() -> list[dict[str, Any]]:
    """A tree with an /etc and no kernel."""
    return [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]


def initramfs_tools(**options: Any) -> dict[str, Any]:
    return {"name": STAGE, "options": options}


def cpio_names(data: bytes) -> list[str]:
    """The member names of a cpio archive in the "newc" format (what initramfs-tools writes)."""
    names = []
    offset = 0
    while offset + 110 <= len(data):
        header = data[offset:offset + 110]
        assert header[:6] in (b"070701", b"070702"), f"not a newc cpio header at {offset}"
        name_size, file_size = int(header[94:102], 16), int(header[54:62], 16)
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        if name == "TRAILER!!!":
            break
        names.append(name)
        offset += 110 + name_size
        offset += -offset % 4
        offset += file_size
        offset += -offset % 4
    return names


def initramfs_names(path: Path) -> list[str]:
    """What a zstd-compressed initramfs (without early microcode) contains."""
    data = subprocess.run(["zstd", "--decompress", "--stdout", str(path)], check=True, capture_output=True).stdout
    return cpio_names(data)


def test_settings_without_a_kernel(shared_store):
    stage = initramfs_tools(modules="list", include=VM_MODULES, compress="zstd", fstype="ext4")
    changes = stage_changes(base_stages(), [stage], shared_store)
    assert_changes(changes, {"added": {
        "/etc/initramfs-tools": {"type": "dir", "mode": "0755"},
        "/etc/initramfs-tools/conf.d": {"type": "dir", "mode": "0755"},
        "/etc/initramfs-tools/conf.d/osbuild.conf": {
            "mode": "0644", "text": CONF_HEADER + "MODULES=list\nCOMPRESS=zstd\nFSTYPE=ext4\n"},
        "/etc/initramfs-tools/modules": {"mode": "0644", "text": MODULES_HEADER + "".join(f"{m}\n" for m in VM_MODULES)},
    }})


def test_only_given_settings_are_written(shared_store):
    changes = stage_changes(base_stages(), [initramfs_tools(modules="dep")], shared_store)
    assert_changes(changes, {"added": {
        "/etc/initramfs-tools": {}, "/etc/initramfs-tools/conf.d": {},
        "/etc/initramfs-tools/conf.d/osbuild.conf": {"text": CONF_HEADER + "MODULES=dep\n"},
    }})


def test_kernel_without_initramfs_tools_fails_clearly(shared_store):
    kernel = {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/lib/modules/6.1.0-99-amd64", "parents": True}]}}
    report = build_failure([*base_stages(), kernel, initramfs_tools(modules="list")], shared_store)
    assert ("error: the tree has a kernel (6.1.0-99-amd64) but no update-initramfs to rebuild its initramfs: "
            "install initramfs-tools before this stage") in report


def test_installed_kernel_gets_a_rebuilt_initramfs(debian_base, shared_store):
    """Configured first, the kernel's install builds the small initramfs; the stage run again rebuilds it.

    Installs Debian's kernel from the mirror (about 70 MB): the slowest test of the stages.
    """
    lock = debian_base.lock_apt(["initramfs-tools", "zstd"], ["linux-image-amd64"])
    first = initramfs_tools(modules="list", include=VM_MODULES, compress="zstd", fstype="ext4")
    with_kernel = [first, *lock["pipeline"]["stages"][1:]]
    before = debian_base.export(with_kernel, shared_store, sources=lock["sources"])
    [version] = [p.name for p in (before / "usr/lib/modules").iterdir()]
    initrd = f"/boot/initrd.img-{version}"
    old = initramfs_names(before / initrd.lstrip("/"))
    assert any(name.endswith("/virtio_blk.ko") for name in old)
    assert not any(name.endswith("/nvme.ko") for name in old)

    again = initramfs_tools(modules="list", include=[*VM_MODULES, "nvme"], compress="zstd", fstype="ext4")
    after = debian_base.export([*with_kernel, again], shared_store, sources=lock["sources"])
    new = initramfs_names(after / initrd.lstrip("/"))
    assert any(name.endswith("/nvme.ko") for name in new)
    assert set(old) <= set(new)

    changes = diff(str(before), str(after), text=True)
    assert_changes(changes, {"changed": {
        "/etc/initramfs-tools/modules": {"lines": {"removed": [], "added": ["nvme"]}},
        initrd: {},
    }})


@pytest.mark.parametrize(("options", "path"), [
    ({"modules": "all"}, ".stages[0].options.modules"),
    ({"compress": "gz"}, ".stages[0].options.compress"),
    ({"include": ["virtio blk"]}, ".stages[0].options.include[0]"),
    ({"include": "ext4"}, ".stages[0].options.include"),
    ({"fstype": "ext4\nMODULES=most"}, ".stages[0].options.fstype"),
    ({"hooks": []}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
