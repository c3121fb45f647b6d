"""The disk stages without devices: a partition table, filesystems and boot code written straight into a disk
file of the tree, read back byte by byte with the host's tools (disktools.py). Small trees, no Debian."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import disktools as dt
import pytest
from conftest import SOURCE_EPOCH, run_osbuild
from testlib import pipeline_file_input, tree_input, v2_manifest, v2_pipeline, v2_stage

DISK = "disk.raw"
TABLE_ID = "d209c89e-ea5e-4fbd-b161-b461cce297e0"
ROOT_UUID = "636c9a89-7d6c-424a-8538-46b791ae4895"
VOLID = "7B7795E7"
BIOS_GUID = "21686148-6449-6E6F-744E-656564454649"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BIOS = (2048, 2048)
ESP = (4096, 32768)
ROOT = (36864, 90112)
BOOTX64 = b"MZ not really an EFI binary\n" * 100

CONTENT = v2_pipeline("os", v2_stage("org.osbuild.copy", files=[
    {"path": "/etc/hostname", "text": "disk-test\n"},
    {"path": "/usr/bin/hello", "text": "#!/bin/sh\necho hello\n", "mode": 0o755},
    {"path": "/boot/efi/EFI/BOOT/BOOTX64.EFI", "base64": base64.b64encode(BOOTX64).decode()},
    {"path": "/boot/efi/EFI/debian/grub.cfg", "text": "configfile (hd0,gpt3)/boot/grub/grub.cfg\n"},
    {"path": "/boot/grub/grub.cfg", "text": "set timeout=0\n"},
]), source_epoch=SOURCE_EPOCH)


def sfdisk(**options: Any) -> dict[str, Any]:
    return v2_stage("org.osbuild.sfdisk", filename=DISK, **options)


GPT = sfdisk(label="gpt", uuid=TABLE_ID, partitions=[
    {"start": BIOS[0], "size": BIOS[1], "type": BIOS_GUID, "name": "BIOS boot", "attrs": [2]},
    {"start": ESP[0], "size": ESP[1], "type": ESP_GUID, "name": "EFI System Partition",
     "uuid": "68b2905b-df3e-4fb3-80fa-49d1e773aa33"},
    {"start": ROOT[0], "size": ROOT[1], "type": LINUX_GUID, "name": "root", "attrs": [0, 60]},
])
TRUNCATE = v2_stage("org.osbuild.truncate", filename=DISK, size="64M")
GRUB_INST = v2_stage("org.osbuild.grub2.inst", filename=DISK, platform="i386-pc", location=BIOS[0],
                     core={"type": "mkimage", "partlabel": "gpt", "filesystem": "ext4"},
                     prefix={"type": "partition", "partlabel": "gpt", "number": 2, "path": "/boot/grub"})
MKFS_FAT = v2_stage("org.osbuild.mkfs.fat", inputs={"tree": tree_input("os")}, filename=DISK, start=ESP[0], size=ESP[1],
                    volid=VOLID, label="ESP", **{"from": "input://tree/boot/efi"})
MKFS_EXT4 = v2_stage("org.osbuild.mkfs.ext4", inputs={"tree": tree_input("os")}, filename=DISK, start=ROOT[0],
                     size=ROOT[1], uuid=ROOT_UUID, label="root", **{"from": "input://tree/"})
IMAGE_STAGES = [TRUNCATE, GPT, GRUB_INST, MKFS_FAT, MKFS_EXT4]


def image(*stages: dict[str, Any]) -> dict[str, Any]:
    return v2_pipeline("image", *stages, source_epoch=SOURCE_EPOCH)


def build(manifest: dict[str, Any], store: Path, out: Path, export: str = "image") -> Path:
    run_osbuild("--store", str(store), "--output-directory", str(out), "--export", export, manifest=manifest)
    return out / export


@pytest.fixture(scope="module")
def disk(shared_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole mount-free disk: table, BIOS boot code, ESP from the tree's /boot/efi, root from the tree."""
    return build(v2_manifest(CONTENT, image(*IMAGE_STAGES)), shared_store, tmp_path_factory.mktemp("disk")) / DISK


def test_sfdisk_writes_the_gpt_table_with_the_manifests_ids(disk: Path) -> None:
    table = dt.partition_table(disk)
    assert (table["label"], table["id"], table["sectorsize"]) == ("gpt", TABLE_ID.upper(), 512)
    parts = [{k: p.get(k) for k in ("node", "start", "size", "type", "name", "attrs")} for p in table["partitions"]]
    assert parts == [
        {"node": "1", "start": 2048, "size": 2048, "type": BIOS_GUID, "name": "BIOS boot", "attrs": "LegacyBIOSBootable"},
        {"node": "2", "start": 4096, "size": 32768, "type": ESP_GUID, "name": "EFI System Partition", "attrs": None},
        {"node": "3", "start": 36864, "size": 90112, "type": LINUX_GUID, "name": "root", "attrs": "RequiredPartition GUID:60"},
    ]
    uuids = [p["uuid"] for p in table["partitions"]]
    assert uuids[1] == "68B2905B-DF3E-4FB3-80FA-49D1E773AA33"
    # Not given, derived from the table's id and the partition's number: nothing random.
    assert uuids[0] == "CBA913EA-743B-506C-BE8F-3F1F24C6C605"
    assert len(set(uuids)) == 3
    assert dt.table_problems(disk) == "", "no stage after sfdisk wrote over the table or its backup"


def test_sfdisk_writes_a_dos_table(shared_store: Path, tmp_path: Path) -> None:
    dos = sfdisk(label="mbr", uuid="0x14fc63d2", partitions=[
        {"start": 2048, "size": 8192, "type": "ef"}, {"partnum": 3, "type": "83", "bootable": True}])
    out = build(v2_manifest(image(TRUNCATE, dos)), shared_store, tmp_path)
    table = dt.partition_table(out / DISK)
    assert (table["label"], table["id"]) == ("dos", "0x14fc63d2")
    assert [(p["node"], p["start"], p["type"], p.get("bootable", False)) for p in table["partitions"]] == [
        ("1", 2048, "ef", False), ("3", 10240, "83", True)]
    assert table["partitions"][1]["start"] + table["partitions"][1]["size"] == 64 * 2048


def test_mkfs_ext4_makes_the_root_filesystem_from_the_tree_in_its_partition(disk: Path) -> None:
    assert dt.probe(disk, ROOT[0]) | {"BLOCK_SIZE": ""} == {
        "LABEL": "root", "UUID": ROOT_UUID, "VERSION": "1.0", "BLOCK_SIZE": "", "TYPE": "ext4", "USAGE": "filesystem"}
    sb = dt.ext4_superblock(disk, ROOT[0])
    assert sb["Filesystem UUID"] == ROOT_UUID and sb["Directory Hash Seed"] == ROOT_UUID
    assert int(sb["Block count"]) * int(sb["Block size"]) == ROOT[1] * dt.SECTOR, "the filesystem fills its partition"
    assert sb["Filesystem created"] == "Tue Nov 14 22:13:20 2023", "the source epoch, not the build's time"
    assert dt.ext4_cat(disk, ROOT[0], "/etc/hostname") == "disk-test\n"
    assert "Mode:  0755" in dt.ext4_stat(disk, ROOT[0], "/usr/bin/hello")


def test_mkfs_fat_makes_the_esp_from_a_directory_of_the_tree(disk: Path, tmp_path: Path) -> None:
    assert dt.probe(disk, ESP[0]) | {"BLOCK_SIZE": ""} == {
        "SEC_TYPE": "msdos", "LABEL_FATBOOT": "ESP", "LABEL": "ESP", "UUID": "7B77-95E7", "VERSION": "FAT16",
        "BLOCK_SIZE": "", "TYPE": "vfat", "USAGE": "filesystem"}
    assert dt.fat_listing(disk, ESP[0]) == ["/EFI", "/EFI/BOOT", "/EFI/BOOT/BOOTX64.EFI", "/EFI/debian",
                                            "/EFI/debian/grub.cfg"]
    assert dt.fat_cat(disk, ESP[0], "/EFI/debian/grub.cfg") == "configfile (hd0,gpt3)/boot/grub/grub.cfg\n"
    assert "BOOTX64  EFI      2800 2023-11-14  22:13" in dt.fat_dir(disk, ESP[0], "/EFI/BOOT"), "dated the source epoch"
    boot = dt.sectors(disk, ESP[0], 1)
    assert struct.unpack_from("<I", boot, 0x1C)[0] == ESP[0], "hidden sectors: where the partition starts"
    assert struct.unpack_from("<HH", boot, 0x18) == (32, 64), "the pinned geometry, not one guessed from the disk"
    assert dt.fat_check(disk, ESP[0], ESP[1], tmp_path).endswith(": 6 files, 6/8167 clusters")


def test_grub2_inst_writes_boot_img_and_core_img_that_find_each_other(disk: Path, tmp_path: Path) -> None:
    mbr = dt.sectors(disk, 0, 1)
    boot_img = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    assert mbr[:0x5C] == boot_img[:0x5C]
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == BIOS[0], "boot.img loads core.img from the BIOS boot partition"
    assert mbr[0x1FE:0x200] == b"\x55\xaa" and mbr[0x1C2] == 0xEE, "the protective MBR stays"
    core = dt.grub_mkimage(tmp_path / "core.img", "--directory=/usr/lib/grub/i386-pc", "--format=i386-pc",
                           "--prefix=(,gpt3)/boot/grub", "biosdisk", "part_gpt", "ext2")
    count = (len(core) + 511) // 512
    written = dt.sectors(disk, BIOS[0], count)
    assert struct.unpack_from("<QH", written, 0x1F4) == (BIOS[0] + 1, count - 1), "core.img's block list"
    assert written[:0x1F4] == core[:0x1F4] and written[0x200:len(core)] == core[0x200:]


def test_the_same_manifest_gives_the_same_disk_in_another_store(disk: Path, tmp_path: Path) -> None:
    again = build(v2_manifest(CONTENT, image(*IMAGE_STAGES)), tmp_path / "store", tmp_path / "out") / DISK
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(disk.read_bytes()).digest()


def test_each_disk_stage_records_that_it_rewrote_the_disk(disk: Path, shared_store: Path) -> None:
    """The source epoch clamps a rewritten disk's mtime back to the last layer's, and its size, mode and owner
    stay: the change records still say each stage changed the disk's bytes, and by how much."""
    manifest = v2_manifest(CONTENT, image(*IMAGE_STAGES))
    records = {}
    for number, stage in enumerate(IMAGE_STAGES, start=1):
        proc = run_osbuild("--store", str(shared_store), "--changes", f"image/{number}", manifest=manifest)
        records[stage["type"]] = json.loads(proc.stdout)
    size = 64 * 1024 * 1024
    assert records.pop("org.osbuild.truncate") == {
        "added": {"/disk.raw": {"type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": size}},
        "removed": {}, "changed": {}}
    for stage, record in records.items():
        assert record == {"added": {}, "removed": {},
                          "changed": {"/disk.raw": {"content": ["old", "new"], "size": [size, size]}}}, stage


QEMU_CASES = {"qcow2": {"type": "qcow2", "compression": False}, "vmdk": {"type": "vmdk", "subformat": "streamOptimized"},
              "vdi": {"type": "vdi"}, "vpc": {"type": "vpc"}, "vhdx": {"type": "vhdx"}}


def qemu_manifest(fmt: dict[str, Any]) -> dict[str, Any]:
    convert = v2_pipeline("converted", v2_stage("org.osbuild.qemu", inputs={"image": pipeline_file_input("image", "/" + DISK)},
                                                filename="disk.img", format=fmt), source_epoch=SOURCE_EPOCH)
    return v2_manifest(CONTENT, image(*IMAGE_STAGES), convert)


@pytest.mark.parametrize("name", sorted(QEMU_CASES))
def test_qemu_converts_the_disk_with_pinned_ids(name: str, disk: Path, shared_store: Path, tmp_path: Path) -> None:
    manifest = qemu_manifest(QEMU_CASES[name])
    first = build(manifest, shared_store, tmp_path / "a", export="converted") / "disk.img"
    assert dt.image_info(first, name)["virtual-size"] == 64 << 20
    dt.convert_to_raw(first, name, tmp_path / "back.raw")
    assert (tmp_path / "back.raw").read_bytes() == disk.read_bytes(), "the same disk inside"
    # A new store converts again: qemu-img's random ids are pinned, so the file is the same.
    second = build(manifest, tmp_path / "store", tmp_path / "b", export="converted") / "disk.img"
    assert second.read_bytes() == first.read_bytes()


def v2_rejected(manifest: dict[str, Any], path: str, store: Path) -> None:
    proc = run_osbuild("--store", str(store), manifest=manifest, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: <stdin>: {path}: " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("stage", "path"), [
    (sfdisk(label="gpt", uuid=TABLE_ID, partitions=[{"start": 2048, "colour": "red"}]), ".options.partitions[0]"),
    (sfdisk(label="sun", uuid=TABLE_ID), ".options.label"),
    (v2_stage("org.osbuild.mkfs.fat", filename=DISK, volid="not-hex"), ".options.volid"),
    (v2_stage("org.osbuild.mkfs.ext4", filename=DISK, uuid=ROOT_UUID, label="a-label-much-too-long"), ".options.label"),
    (v2_stage("org.osbuild.mkfs.ext4", filename=DISK, uuid=ROOT_UUID, start=-1), ".options.start"),
    (v2_stage("org.osbuild.grub2.inst", filename=DISK, platform="i386-pc", location=2048,
              core={"type": "mkimage", "partlabel": "gpt", "filesystem": "ext4"}, prefix={"path": "boot"}), ".options.prefix"),
    (v2_stage("org.osbuild.qemu", filename="x", format={"type": "qcow2", "cluster_size": 1}), ".options.format"),
])
def test_bad_options_are_refused_before_anything_runs(stage: dict[str, Any], path: str, shared_store: Path) -> None:
    v2_rejected(v2_manifest(image(TRUNCATE, stage)), f".pipelines[0].stages[1]{path}", shared_store)


def failure(manifest: dict[str, Any], store: Path) -> str:
    proc = run_osbuild("--store", str(store), "--export", "image", "--output-directory", str(store / "out"),
                       manifest=manifest, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_a_stage_without_a_device_or_a_file_says_so(shared_store: Path) -> None:
    report = failure(v2_manifest(image(TRUNCATE, v2_stage("org.osbuild.mkfs.ext4", uuid=ROOT_UUID))), shared_store)
    assert "error: give the disk file as the option `filename`, or a `device`" in report


def test_a_filesystem_beyond_the_disk_is_refused(shared_store: Path) -> None:
    stage = v2_stage("org.osbuild.mkfs.fat", filename=DISK, start=131000, size=2048, volid=VOLID)
    report = failure(v2_manifest(image(TRUNCATE, stage)), shared_store)
    assert "error: disk.raw has 131072 sectors: sectors 131000 to 133048 are not in it" in report


def test_fat_refuses_what_it_cannot_hold(shared_store: Path) -> None:
    files = [{"path": "/esp/A", "text": "1"}, {"path": "/esp/a", "text": "2"}]
    content = v2_pipeline("os", v2_stage("org.osbuild.copy", files=files))
    stage = v2_stage("org.osbuild.mkfs.fat", inputs={"tree": tree_input("os")}, filename=DISK, volid=VOLID,
                     **{"from": "input://tree/esp"})
    report = failure(v2_manifest(content, image(TRUNCATE, stage)), shared_store)
    assert "error: fat: /A and /a differ only in case, which FAT cannot tell apart" in report


def test_grub2_inst_refuses_a_core_img_that_overruns_the_next_partition(shared_store: Path) -> None:
    small = sfdisk(label="gpt", uuid=TABLE_ID, partitions=[{"start": 2048, "size": 16, "type": BIOS_GUID},
                                                          {"start": 4096, "type": LINUX_GUID}])
    report = failure(v2_manifest(image(TRUNCATE, small, GRUB_INST)), shared_store)
    assert "does not fit between sector 2048 and 2064" in report


def test_the_sample_disk_pipeline_uses_these_stages_in_this_order() -> None:
    sample = json.loads((Path(__file__).resolve().parents[2] / "samples/debian-bookworm-v2.json").read_text())
    names = {p["name"]: [s["type"] for s in p["stages"]] for p in sample["pipelines"]}
    # The root filesystem, the big write, comes last: each later stage would keep a copy of the disk file.
    assert names["image"] == ["org.osbuild.truncate", "org.osbuild.sfdisk", "org.osbuild.grub2.inst",
                              "org.osbuild.mkfs.fat", "org.osbuild.mkfs.ext4"]
    assert names["qcow2"] == ["org.osbuild.qemu"]


def test_sgdisk_writes_the_gpt_table_with_the_manifests_ids(shared_store: Path, tmp_path: Path) -> None:
    sgdisk = v2_stage("org.osbuild.sgdisk", filename=DISK, uuid=TABLE_ID, quote_partition_name=False, partitions=[
        {"start": BIOS[0], "size": BIOS[1], "type": "ef02", "name": "BIOS boot", "bootable": True},
        {"start": ESP[0], "size": ESP[1], "type": ESP_GUID, "name": "EFI System Partition", "attrs": [0]},
        {"start": ROOT[0], "type": LINUX_GUID, "name": "root", "uuid": "6264d520-3fb9-423f-8ab8-7a0a8e3d3562"}])
    disk = build(v2_manifest(image(TRUNCATE, sgdisk)), shared_store, tmp_path) / DISK
    table = dt.partition_table(disk)
    assert (table["label"], table["id"]) == ("gpt", TABLE_ID.upper())
    assert [(p["start"], p["size"], p["type"], p["name"], p.get("attrs")) for p in table["partitions"]] == [
        (2048, 2048, BIOS_GUID, "BIOS boot", "LegacyBIOSBootable"),
        (4096, 32768, ESP_GUID, "EFI System Partition", "RequiredPartition"),
        (36864, 131072 - 33 - 36864, LINUX_GUID, "root", None)]  # to the last usable sector
    assert [p["uuid"] for p in table["partitions"]] == [
        "CBA913EA-743B-506C-BE8F-3F1F24C6C605", "25D0FE8B-5563-5A60-B0F8-A7B20D1E1773",
        "6264D520-3FB9-423F-8AB8-7A0A8E3D3562"], "derived as sfdisk derives them, or given"
    assert dt.table_problems(disk) == ""


def test_sgdisk_quotes_names_by_default_as_osbuild_does(shared_store: Path, tmp_path: Path) -> None:
    sgdisk = v2_stage("org.osbuild.sgdisk", filename=DISK, uuid=TABLE_ID, partitions=[{"name": "root"}])
    disk = build(v2_manifest(image(TRUNCATE, sgdisk)), shared_store, tmp_path) / DISK
    assert dt.partition_table(disk)["partitions"][0]["name"] == '"root"'


XFS_SIZE = 614400  # sectors: 300 MiB, the smallest xfs that xfsprogs 6.1 makes


def test_mkfs_xfs_makes_a_filesystem_from_the_tree_in_its_partition(shared_store: Path, tmp_path: Path) -> None:
    stages = [v2_stage("org.osbuild.truncate", filename=DISK, size="320M"),
              sfdisk(label="gpt", uuid=TABLE_ID, partitions=[{"start": 2048, "size": XFS_SIZE, "type": LINUX_GUID}]),
              v2_stage("org.osbuild.mkfs.xfs", inputs={"tree": tree_input("os")}, filename=DISK, start=2048,
                       size=XFS_SIZE, uuid=ROOT_UUID, label="root", agcount=2, **{"from": "input://tree/"})]
    disk = build(v2_manifest(CONTENT, image(*stages)), shared_store, tmp_path) / DISK
    probe = dt.probe(disk, 2048)
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == ("xfs", ROOT_UUID, "root")
    sb = dt.xfs_superblock(disk, 2048, tmp_path, XFS_SIZE)
    assert sb["uuid"] == ROOT_UUID and sb["fname"] == '"root\\000\\000\\000\\000\\000\\000\\000\\000"'
    assert dt.table_problems(disk) == ""
    again = build(v2_manifest(CONTENT, image(*stages)), tmp_path / "store", tmp_path / "again") / DISK
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(disk.read_bytes()).digest()
