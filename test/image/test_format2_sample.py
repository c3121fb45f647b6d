"""samples/debian-bookworm-v2.json: the default image in format 2, a GPT disk made by disk stages, booting both ways.

The sample has three pipelines: `os` (the tree, with GRUB for BIOS and UEFI), `image` (a
disk file made without loop devices or mounts: GPT with a BIOS boot partition, an ESP
filled from the tree's /boot/efi and the root filesystem from the tree) and `qcow2`
(org.osbuild.qemu). Its disk is not format 1's (dos, one partition), so what is compared
with the tree is what the disk holds: the root filesystem is the `os` tree, the ESP its
/boot/efi.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, build_json, run_osbuild

from osbuild.treediff import diff

pytestmark = [pytest.mark.image]

SAMPLE = REPO / "samples/debian-bookworm-v2.json"
IMAGE = "debian-bookworm.qcow2"
SECTOR = 512


@pytest.fixture(scope="module")
def locked_v2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("locked-v2") / "locked.json"
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(SAMPLE), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    locked: dict[str, Any] = json.loads(out.read_text())
    return locked


def test_the_lock_holds_format_1s_packages_and_grub_for_uefi(locked_v2: dict[str, Any], locked_sample: dict[str, Any]) -> None:
    assert locked_v2["version"] == "2"
    items = locked_v2["sources"]["org.osbuild.curl"]["items"]
    assert all(isinstance(url, str) and url.endswith(".deb") for url in items.values())
    assert set(locked_sample["sources"]["org.osbuild.files"]["urls"]) < set(items)
    assert any("/grub-efi-amd64-bin_" in url for url in items.values())
    ids = json.loads(run_osbuild("--inspect", manifest=locked_v2).stdout)
    assert [p["name"] for p in ids["pipelines"]] == ["build", "os", "image", "qcow2"]
    # Every pipeline runs with the locked build root, which is locked like the rest.
    assert all(p["build"] == "name:build" for p in locked_v2["pipelines"][1:])
    assert "packages" in locked_v2["pipelines"][0]["stages"][0]["inputs"]


def partitions(disk: Path) -> dict[str, dict[str, Any]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True).stdout)
    return {p["name"]: p for p in table["partitiontable"]["partitions"]}


@pytest.mark.boot
def test_the_format_2_image_holds_the_tree_and_boots_by_bios_and_uefi(locked_v2: dict[str, Any], shared_store: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = build_json(locked_v2, shared_store, "--output-directory", str(out), "--export", "qcow2", "--export", "os")
    assert result["success"], result
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out / "qcow2" / IMAGE), str(raw)], check=True)
    parts = partitions(raw)
    assert list(parts) == ["BIOS boot", "EFI System Partition", "root"]
    verify = subprocess.run(["sfdisk", "--verify", str(raw)], capture_output=True, text=True, check=True).stdout
    assert "No errors detected" in verify
    # The root filesystem is the os tree (mke2fs adds lost+found).
    root = tmp_path / "root"
    root.mkdir()
    filesystem = f"{raw}?offset={parts['root']['start'] * SECTOR}"
    subprocess.run(["debugfs", "-R", f"rdump / {root}", filesystem], check=True, capture_output=True)
    changes = diff(str(out / "os"), str(root / "."))
    assert set(changes["added"]) == {"/lost+found"} and changes["removed"] == {}, changes
    # rdump drops setuid, setgid and sticky bits and extended attributes: those are read from the filesystem.
    changed = changes["changed"]
    assert all(set(change) <= {"mode", "xattrs"} for change in changed.values()), changed
    special = sorted(p for p in changed if "mode" in changed[p])
    stats = subprocess.run(["debugfs", "-f", "-", filesystem], input="".join(f'stat "{p}"\n' for p in special),
                           capture_output=True, text=True, check=True).stdout
    assert re.findall(r"Mode:\s+0?(\d+)", stats) == [changed[p]["mode"][0] for p in special]
    for path in sorted(p for p in changed if "xattrs" in changed[p]):
        listed = subprocess.run(["debugfs", "-R", f'ea_list "{path}"', filesystem], capture_output=True, text=True,
                                check=True).stdout
        assert all(name in listed for name in changed[path]["xattrs"][0]), (path, listed)
    # The ESP holds the tree's /boot/efi: GRUB for UEFI.
    esp = f"{raw}@@{parts['EFI System Partition']['start'] * SECTOR}"
    efi = subprocess.run(["mtype", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, check=True,
                         env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert efi == (out / "os" / "boot/efi/EFI/BOOT/BOOTX64.EFI").read_bytes()
    for firmware in ([], ["--uefi"]):
        booted = subprocess.run([sys.executable, str(REPO / "tools/osbuild-boot-test"), *firmware, str(out / "qcow2" / IMAGE),
                                 "--log", str(tmp_path / f"console{''.join(firmware)}.log"), "--timeout", "600",
                                 "--login", "root:osbuild"], capture_output=True, text=True, check=False)
        assert booted.returncode == 0 and "PASS" in booted.stdout, [*firmware, booted.stdout + booted.stderr]


def osbuild_style(locked: dict[str, Any]) -> dict[str, Any]:
    """The sample's disk made osbuild's way: loop devices the engine attaches, the root filesystem made on its
    partition's device and filled by org.osbuild.copy through an ext4 mount. The ESP stays mount-free: this
    kernel has no vfat."""
    manifest = json.loads(json.dumps(locked))
    image = next(p for p in manifest["pipelines"] if p["name"] == "image")
    stages = {s["type"]: s for s in image["stages"]}
    disk = stages["org.osbuild.truncate"]["options"]["filename"]
    root = stages["org.osbuild.mkfs.ext4"]["options"]

    def loopback(**options: Any) -> dict[str, Any]:
        return {"type": "org.osbuild.loopback", "options": {"filename": disk, **options}}

    sfdisk = stages["org.osbuild.sfdisk"]
    sfdisk["options"].pop("filename")
    sfdisk["devices"] = {"device": loopback()}
    partition = loopback(start=root.pop("start"), size=root.pop("size"))
    for key in ("filename", "from"):
        root.pop(key)
    stages["org.osbuild.mkfs.ext4"].pop("inputs")
    stages["org.osbuild.mkfs.ext4"]["devices"] = {"device": partition}
    copy = {"type": "org.osbuild.copy", "options": {"paths": [{"from": "input://tree/", "to": "mount://root/"}]},
            "inputs": {"tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}},
            "devices": {"root": partition},
            "mounts": [{"name": "root", "type": "org.osbuild.ext4", "source": "root", "target": "/"}]}
    image["stages"].append(copy)
    return manifest


@pytest.mark.boot
def test_the_image_made_osbuilds_way_with_devices_and_mounts_boots(locked_v2: dict[str, Any], shared_store: Path,
                                                                   tmp_path: Path) -> None:
    result = build_json(osbuild_style(locked_v2), shared_store, "--output-directory", str(tmp_path), "--export", "qcow2")
    assert result["success"], result
    types = [s["type"] for s in result["pipelines"]["image"]["stages"]]
    assert types[-2:] == ["org.osbuild.mkfs.ext4", "org.osbuild.copy"]
    booted = subprocess.run([sys.executable, str(REPO / "tools/osbuild-boot-test"), str(tmp_path / "qcow2" / IMAGE),
                             "--log", str(tmp_path / "console.log"), "--timeout", "600", "--login", "root:osbuild"],
                            capture_output=True, text=True, check=False)
    assert booted.returncode == 0 and "PASS" in booted.stdout, booted.stdout + booted.stderr
