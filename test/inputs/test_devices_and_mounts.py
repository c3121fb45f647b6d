"""Format-2 devices and mounts: a loop device and a filesystem made on the host for one stage, released however it ends."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from testlib import (
    Library,
    kill_group,
    mounts_anywhere,
    objects_in,
    v2_manifest,
    v2_pipeline,
    v2_stage,
    wait_for_line,
    wait_until_gone,
)

from osbuild.devices import refuse
from osbuild.errors import UserError
from osbuild.formats import v2
from osbuild.meta import Index

MiB = 1 << 20
PART_START = 2048            # sectors: the partition starts at 1 MiB
PART_SECTORS = 16 * 2048     # 16 MiB
MKIMAGE = "org.osbuild.test.mkimage"
MKIMAGE_BODY = '''
def main(tree, options):
    image = os.path.join(tree, "disk.img")
    subprocess.run(["truncate", "-s", "20M", image], check=True)
    # One GPT partition of 16 MiB at 1 MiB, with an ext4 filesystem in it (made in the file: no device needed).
    subprocess.run(["sfdisk", "-q", image], input=b"label: gpt\\nstart=2048, size=32768\\n", check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "offset=1048576", image, "16M"], check=True)
'''
WRITER = "org.osbuild.test.writer"
WRITER_BODY = '''
def main(tree, options):
    args = osbuild.api.arguments()
    root = args["mounts"]["root"]["path"]
    with open(os.path.join(root, "hello"), "w") as f:
        f.write(options.get("text", "written through the mount\\n"))
    report = {"devices": args["devices"], "mounts": args["mounts"],
              "is_block": os.path.exists(args["devices"]["disk"]["path"]),
              "dev": sorted(name for name in os.listdir("/dev") if name.startswith("loop"))}
    with open(os.path.join(tree, "report.json"), "w") as f:
        json.dump(report, f)
    print("written, sleeping", flush=True)
    time.sleep(options.get("sleep", 0))
'''


@pytest.fixture
def disklib(lib: Library) -> Library:
    lib.stage(MKIMAGE, MKIMAGE_BODY)
    lib.stage(WRITER, WRITER_BODY, schema={"type": "object", "properties": {"sleep": {"type": "number"},
                                                                          "text": {"type": "string"}}})
    return lib


def writer(**options: Any) -> dict[str, Any]:
    stage = v2_stage(WRITER, **options)
    stage["devices"] = {"disk": {"type": "org.osbuild.loopback",
                                 "options": {"filename": "disk.img", "start": PART_START, "size": PART_SECTORS}}}
    stage["mounts"] = [{"name": "root", "type": "org.osbuild.ext4", "source": "disk", "target": "/"}]
    return stage


def manifest(**options: Any) -> dict[str, Any]:
    return v2_manifest(v2_pipeline("image", v2_stage(MKIMAGE), writer(**options)))


def loop_devices_over(path: Path) -> list[str]:
    """Loop devices on the host whose backing file lies under path."""
    out = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


def test_a_stage_writes_a_filesystem_in_a_partition_of_an_image_through_a_loop_device(disklib: Library, tmp_path: Path) -> None:
    tree = disklib.build_tree(manifest(), tmp_path / "store", tmp_path / "out", export="image")
    image = tree / "disk.img"
    # The host reads the partition's filesystem straight from the image file.
    extracted = tmp_path / "partition.img"
    subprocess.run(["dd", f"if={image}", f"of={extracted}", "bs=512", f"skip={PART_START}", f"count={PART_SECTORS}",
                    "status=none"], check=True)
    content = subprocess.run(["debugfs", "-R", "cat /hello", str(extracted)], capture_output=True, text=True, check=True).stdout
    assert content == "written through the mount\n"
    report = json.loads((tree / "report.json").read_text())
    assert report["devices"]["disk"]["path"].startswith("/dev/loop") and report["is_block"]
    assert report["dev"] == [report["devices"]["disk"]["path"][len("/dev/"):]], "the stage sees its own loop device only"
    assert report["mounts"] == {"root": {"path": "/run/osbuild/mounts"}}
    assert "hello" not in {p.name for p in tree.iterdir()}, "the mount is not the tree"
    # Released: no loop device over the store's files, no mount left.
    assert loop_devices_over(tmp_path) == []
    assert mounts_anywhere(str(tmp_path / "store")) == []


def test_the_same_stage_is_cached_and_a_changed_device_is_not(disklib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    disklib.build_json(manifest(), store, "--output-directory", str(tmp_path / "out"), "--export", "image")
    again = disklib.build_json(manifest(), store, "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert [s["status"] for s in again["pipelines"]["image"]["stages"]] == ["cached", "cached"]
    other = manifest()
    other["pipelines"][0]["stages"][1]["devices"]["disk"]["options"]["lock"] = True
    changed = disklib.build_json(other, store, "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert [s["status"] for s in changed["pipelines"]["image"]["stages"]] == ["cached", "built"]


def test_sigkill_leaves_no_loop_device_and_no_mount(disklib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = disklib.popen("--store", str(store), "--output-directory", str(tmp_path / "out"), "--export", "image",
                         manifest=manifest(sleep=60))
    try:
        wait_for_line(proc, "written, sleeping")
        assert loop_devices_over(tmp_path), "the stage runs on a loop device over its image"
    finally:
        kill_group(proc)
        proc.wait()
    assert wait_until_gone(f"/run/osbuild/bin/{WRITER}") == []
    assert mounts_anywhere(str(store)) == []
    for _ in range(50):
        if not loop_devices_over(tmp_path):
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert loop_devices_over(tmp_path) == []
    assert len(objects_in(store)) == 1, "only the stage before the killed one is in the store"


def test_a_filesystem_that_will_not_mount_fails_the_stage_in_one_message(disklib: Library, tmp_path: Path) -> None:
    broken = manifest()
    broken["pipelines"][0]["stages"][1]["devices"]["disk"]["options"]["start"] = 0   # the GPT, not the filesystem
    proc = disklib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                       manifest=broken, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "error: mount root (org.osbuild.ext4 on device disk):" in proc.stderr
    assert loop_devices_over(tmp_path) == []
    assert mounts_anywhere(str(tmp_path / "store")) == []


def test_without_root_a_stage_with_devices_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, disklib: Library) -> None:
    loaded = v2.load(manifest(), Index(str(disklib.root)))
    stages = [(p.name, s) for p in loaded.pipelines for s in p.stages]
    refuse(stages)   # as root: fine
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(UserError, match=f"stage {WRITER} in pipeline image uses devices or mounts, which need root"):
        refuse(stages)


def test_a_mount_by_partition_number_finds_it_in_the_partition_table(disklib: Library, tmp_path: Path) -> None:
    """The kernel here does not scan loop devices for partitions: the engine reads the table and maps the partition."""
    by_number = manifest(text="found by its number\n")
    stage = by_number["pipelines"][0]["stages"][1]
    stage["devices"]["disk"]["options"] = {"filename": "disk.img", "partscan": True}
    stage["mounts"][0]["partition"] = 1
    tree = disklib.build_tree(by_number, tmp_path / "store", tmp_path / "out", export="image")
    extracted = tmp_path / "partition.img"
    subprocess.run(["dd", f"if={tree / 'disk.img'}", f"of={extracted}", "bs=512", f"skip={PART_START}",
                    f"count={PART_SECTORS}", "status=none"], check=True)
    content = subprocess.run(["debugfs", "-R", "cat /hello", str(extracted)], capture_output=True, text=True, check=True).stdout
    assert content == "found by its number\n"
    assert loop_devices_over(tmp_path) == []
    missing = copy.deepcopy(by_number)
    missing["pipelines"][0]["stages"][1]["mounts"][0]["partition"] = 3
    proc = disklib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                       manifest=missing, check=False)
    assert proc.returncode == 1
    assert "mount root: partition 3 of device disk: the device's partition table has no such partition" in proc.stderr
    assert loop_devices_over(tmp_path) == []


def test_a_loopback_file_outside_the_tree_is_not_reached(disklib: Library, tmp_path: Path) -> None:
    """`filename` is a path in the stage's tree: .. and symlinks stop at its root, never at a host file."""
    host_file = tmp_path / "host-disk.img"
    host_file.write_bytes(b"\0" * MiB)
    escaping = manifest()
    escaping["pipelines"][0]["stages"][1]["devices"]["disk"]["options"]["filename"] = "../" * 30 + str(host_file).lstrip("/")
    proc = disklib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                       manifest=escaping, check=False)
    assert proc.returncode == 1
    assert "is not a regular file in the tree" in proc.stderr
    assert loop_devices_over(tmp_path) == []
    assert host_file.read_bytes() == b"\0" * MiB


def test_a_bind_mount_puts_a_mounted_filesystem_into_the_tree_for_the_stage(disklib: Library, tmp_path: Path) -> None:
    """org.osbuild.bind: mount://PATH over tree://PATH, as osbuild's; what the stage writes there lands in the image."""
    disklib.stage("org.osbuild.test.mnt", '''
def main(tree, options):
    os.makedirs(os.path.join(tree, "mnt"))
''')
    disklib.stage("org.osbuild.test.through-tree", '''
def main(tree, options):
    with open(os.path.join(tree, "mnt", "via-tree"), "w") as f:
        f.write("through the tree\\n")
''')
    stage = v2_stage("org.osbuild.test.through-tree")
    stage["devices"] = writer()["devices"]
    stage["mounts"] = [*writer()["mounts"],
                       {"name": "bind", "type": "org.osbuild.bind", "target": "tree://mnt", "options": {"source": "mount://"}}]
    bound = v2_manifest(v2_pipeline("image", v2_stage(MKIMAGE), v2_stage("org.osbuild.test.mnt"), stage))
    tree = disklib.build_tree(bound, tmp_path / "store", tmp_path / "out", export="image")
    assert list((tree / "mnt").iterdir()) == [], "the file went into the filesystem, not the tree"
    extracted = tmp_path / "partition.img"
    subprocess.run(["dd", f"if={tree / 'disk.img'}", f"of={extracted}", "bs=512", f"skip={PART_START}",
                    f"count={PART_SECTORS}", "status=none"], check=True)
    content = subprocess.run(["debugfs", "-R", "cat /via-tree", str(extracted)], capture_output=True, text=True,
                             check=True).stdout
    assert content == "through the tree\n"
    assert mounts_anywhere(str(tmp_path / "store")) == []


def test_xfs_mounts_read_write_then_read_only_without_recovery(disklib: Library, tmp_path: Path) -> None:
    disklib.stage("org.osbuild.test.mkxfs", '''
def main(tree, options):
    image = os.path.join(tree, "xfs.img")
    subprocess.run(["truncate", "-s", "320M", image], check=True)
    subprocess.run(["mkfs.xfs", "-q", image], check=True)
''')
    disklib.stage("org.osbuild.test.readback", '''
def main(tree, options):
    root = osbuild.api.arguments()["mounts"]["root"]["path"]
    with open(os.path.join(root, "hello"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(tree, "read-back"), "w", encoding="utf-8") as f:
        f.write(text)
    print("write", attempt(lambda: open(os.path.join(root, "other"), "w").write("x")), flush=True)
''')
    def on_xfs(stage: dict[str, Any], **options: Any) -> dict[str, Any]:
        stage["devices"] = {"disk": {"type": "org.osbuild.loopback", "options": {"filename": "xfs.img"}}}
        stage["mounts"] = [{"name": "root", "type": "org.osbuild.xfs", "source": "disk", "target": "/", "options": options}]
        return stage

    xfs = v2_manifest(v2_pipeline("image", v2_stage("org.osbuild.test.mkxfs"), on_xfs(v2_stage(WRITER, text="on xfs\n")),
                                  on_xfs(v2_stage("org.osbuild.test.readback"), readonly=True, norecovery=True)))
    result = disklib.build_json(xfs, tmp_path / "store", "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert (tmp_path / "out/image/read-back").read_text() == "on xfs\n"
    write = result["log"]["image"][2]["output"]
    assert "'errno': 30" in write, write   # EROFS: the read-only mount is read-only
    assert loop_devices_over(tmp_path) == []


def test_a_failing_stage_releases_its_devices_and_mounts(disklib: Library, tmp_path: Path) -> None:
    failing = manifest()
    stage = failing["pipelines"][0]["stages"][1]
    stage["type"], stage["options"] = "org.osbuild.test", {"print": ["failing on purpose"], "exit": 3}
    proc = disklib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                       manifest=failing, check=False)
    assert proc.returncode == 1
    assert "failing on purpose" in proc.stderr and "exit status 3" in proc.stderr
    assert loop_devices_over(tmp_path) == []
    assert mounts_anywhere(str(tmp_path / "store")) == []
