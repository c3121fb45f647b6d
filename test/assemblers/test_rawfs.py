"""org.osbuild.rawfs and osbuild.fsimage: filesystem images of a tree, read back without mounting, and reproducible."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from assemblerlib import OLD, ROOT, assemble, export, failed, make_libdir, rejected, sha256, tree_stage

from osbuild import fsimage
from osbuild.api import StageError

EPOCH = 1700000000
FS_UUID = "6e2ae3a5-3c3f-4d9c-9d2b-8f1b3e0c2a11"
EXT4_SIZE = 16 << 20
XFS_SIZE = 300 << 20


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_libdir(tmp_path_factory.mktemp("lib"))


def rawfs(**options: Any) -> dict[str, Any]:
    defaults = {"filename": "root.img", "root_fs_uuid": FS_UUID, "size": EXT4_SIZE, "label": "root"}
    return {"name": "org.osbuild.rawfs", "options": {**defaults, **options}}


def tool(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=dict(os.environ, TZ="UTC"), check=False)
    assert proc.returncode == 0, f"{argv} failed: {proc.stderr}"
    return proc.stdout


def blkid(image: Path, offset: int = 0) -> dict[str, str]:
    output = tool("blkid", "-p", "-o", "export", "-O", str(offset), str(image))
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def tree_entries(tree: Path) -> dict[str, tuple[int, int, int]]:
    """Every path of an exported tree with (mode with type bits, uid, gid)."""
    entries = {}
    for directory, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(directory) / name
            st = os.lstat(path)
            entries["/" + str(path.relative_to(tree))] = (st.st_mode, st.st_uid, st.st_gid)
    return entries


def ext4_entries(image: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path in an ext4 image with (mode, uid, gid, inode), read with debugfs `ls -p`."""
    entries: dict[str, tuple[int, int, int, int]] = {}
    todo = ["/"]
    while todo:
        directory = todo.pop()
        for line in tool("debugfs", "-R", f"ls -p {directory}", str(image)).splitlines():
            fields = line.split("/")
            # Empty slots (inode 0) fill lost+found's preallocated blocks.
            if len(fields) < 7 or fields[5] in (".", "..") or fields[1] == "0":
                continue
            ino, mode, uid, gid, name = int(fields[1]), int(fields[2], 8), int(fields[3]), int(fields[4]), fields[5]
            path = directory.rstrip("/") + "/" + name
            entries[path] = (mode, uid, gid, ino)
            if stat.S_ISDIR(mode):
                todo.append(path)
    return entries


def debugfs_stat(image: Path, path: str) -> str:
    return tool("debugfs", "-R", f"stat {path}", str(image))


def xfs_inodes(image: Path, paths: list[str], fields: str) -> dict[str, dict[str, str]]:
    """Fields of the inodes at `paths` in an xfs image, read with xfs_db."""
    commands = []
    for path in paths:
        commands += ["-c", f"path {path}", "-c", f"print {fields}"]
    output = tool("xfs_db", "-r", *commands, str(image))
    values = re.findall(r"^(\S+) = (.*)$", output, re.MULTILINE)
    per_path = len(fields.split())
    assert len(values) == per_path * len(paths), output
    return {path: dict(values[i * per_path:(i + 1) * per_path]) for i, path in enumerate(paths)}


# -- ext4 --------------------------------------------------------------------------------


def test_ext4_image_holds_the_tree(libdir, tmp_path):
    store = tmp_path / "store"
    image = assemble(libdir, store, tmp_path / "out", [tree_stage()], rawfs(), source_epoch=EPOCH) / "root.img"
    tree = export(libdir, store, tmp_path / "out", [tree_stage()], source_epoch=EPOCH)
    assert image.stat().st_size == EXT4_SIZE
    assert image.stat().st_blocks * 512 < EXT4_SIZE, "the image is not sparse"
    ids = blkid(image)
    assert (ids["TYPE"], ids["UUID"], ids["LABEL"]) == ("ext4", FS_UUID, "root")
    header = tool("dumpe2fs", "-h", str(image))
    assert re.search(rf"^Filesystem UUID:\s+{FS_UUID}$", header, re.MULTILINE)
    assert re.search(rf"^Directory Hash Seed:\s+{FS_UUID}$", header, re.MULTILINE)
    assert re.search(r"^Filesystem created:\s+Tue Nov 14 22:13:20 2023$", header, re.MULTILINE)

    in_image = ext4_entries(image)
    expected = {path: (mode, uid, gid) for path, (mode, uid, gid) in tree_entries(tree).items()}
    expected["/lost+found"] = (stat.S_IFDIR | 0o700, 0, 0)
    assert {path: entry[:3] for path, entry in in_image.items()} == expected
    assert in_image["/etc/hostname"][3] == in_image["/etc/hostname.hardlink"][3]

    assert tool("debugfs", "-R", "cat /etc/motd", str(image)) == "hello\n"
    assert 'Fast link dest: "ping"' in debugfs_stat(image, "/usr/bin/sh")
    assert "Device major/minor number: 01:03" in debugfs_stat(image, "/dev/null")
    assert "security.capability (20)" in tool("debugfs", "-R", "ea_list /usr/bin/ping", str(image))
    xattrs = tool("debugfs", "-R", "ea_list /etc/hostname", str(image))
    assert all(f'user.{name} (1) = "{name[0]}"' in xattrs for name in ("alpha", "middle", "zeta"))
    motd = debugfs_stat(image, "/etc/motd")
    assert f"mtime: 0x{OLD + 2:08x}:00000000" in motd
    assert f"ctime: 0x{EPOCH:08x}:00000000" in motd and f"atime: 0x{EPOCH:08x}:00000000" in motd
    tool("e2fsck", "-fn", str(image))


def test_ext4_root_gets_the_tree_roots_mode_and_owner(libdir, tmp_path):
    stages = [tree_stage(root={**ROOT, "mode": 0o750})]
    image = assemble(libdir, tmp_path / "store", tmp_path / "out", stages, rawfs()) / "root.img"
    root = debugfs_stat(image, "/")
    assert re.search(r"Type: directory\s+Mode:\s+0750", root), root
    assert re.search(r"User:\s+0\s+Group:\s+0", root), root


def test_ext4_same_tree_from_two_stores_gives_the_same_bytes(libdir, tmp_path):
    first = assemble(libdir, tmp_path / "store-a", tmp_path / "out-a", [tree_stage()], rawfs(), source_epoch=EPOCH)
    time.sleep(1.1)
    second = assemble(libdir, tmp_path / "store-b", tmp_path / "out-b", [tree_stage(reverse=True)], rawfs(),
                      source_epoch=EPOCH)
    assert sha256(first / "root.img") == sha256(second / "root.img")


def test_ext4_tree_larger_than_the_image_fails_in_one_line(libdir, tmp_path):
    stages = [tree_stage([{"path": "/big", "text": "x" * (3 << 20)}], root={})]
    output = failed(libdir, tmp_path / "store", stages, rawfs(size=2 << 20))
    assert "mke2fs failed: " in output


# -- xfs ---------------------------------------------------------------------------------


def test_xfs_image_holds_the_tree_and_is_reproducible(libdir, tmp_path):
    store = tmp_path / "store-a"
    assembler = rawfs(fs_type="xfs", size=XFS_SIZE)
    first = assemble(libdir, store, tmp_path / "out-a", [tree_stage()], assembler, source_epoch=EPOCH) / "root.img"
    ids = blkid(first)
    assert (ids["TYPE"], ids["UUID"], ids["LABEL"]) == ("xfs", FS_UUID, "root")
    tool("xfs_repair", "-n", "-f", str(first))

    tree = export(libdir, store, tmp_path / "out-a", [tree_stage()], source_epoch=EPOCH)
    expected = tree_entries(tree)
    inodes = xfs_inodes(first, ["/", *sorted(expected)], "core.mode core.uid core.gid")
    for path, (mode, uid, gid) in expected.items():
        assert inodes[path] == {"core.mode": f"0{mode:o}", "core.uid": str(uid), "core.gid": str(gid)}, path
    assert inodes["/"]["core.mode"] == "040755"

    times = xfs_inodes(first, ["/etc/motd", "/"], "core.mtime.nsec core.ctime.nsec v3.crtime.nsec core.mtime.sec")
    assert times["/etc/motd"]["core.mtime.nsec"] == "500000000"
    assert times["/etc/motd"]["core.mtime.sec"] == "Sun Sep 13 12:26:42 2020"
    assert times["/"]["core.mtime.sec"] == "Sun Sep 13 12:26:40 2020"
    # Hard links cannot be made by a protofile: each name is its own inode.
    links = xfs_inodes(first, ["/etc/hostname", "/etc/hostname.hardlink"], "core.nlinkv2 v3.inumber")
    assert links["/etc/hostname"]["v3.inumber"] != links["/etc/hostname.hardlink"]["v3.inumber"]

    second = assemble(libdir, tmp_path / "store-b", tmp_path / "out-b", [tree_stage(reverse=True)], assembler,
                      source_epoch=EPOCH) / "root.img"
    assert sha256(first) == sha256(second)


def test_xfs_refuses_names_a_protofile_cannot_hold(libdir, tmp_path):
    stages = [tree_stage([{"path": "/etc/two words", "text": "x"}], root={})]
    output = failed(libdir, tmp_path / "store", stages, rawfs(fs_type="xfs", size=XFS_SIZE))
    assert "xfs: cannot put '/etc/two words' in a protofile" in output


def test_xfs_label_longer_than_twelve_bytes_fails_in_one_line(libdir, tmp_path):
    output = failed(libdir, tmp_path / "store", [tree_stage()], rawfs(fs_type="xfs", size=XFS_SIZE, label="thirteen-char"))
    assert "xfs label 'thirteen-char' must be 1 to 12 bytes" in output


@pytest.mark.parametrize(("options", "path"), [
    ({"root_fs_uuid": "not-a-uuid"}, ".assembler.options.root_fs_uuid"),
    ({"size": EXT4_SIZE + 100}, ".assembler.options.size"),
    ({"fs_type": "btrfs"}, ".assembler.options.fs_type"),
    ({"label": "a-label-longer-than-16"}, ".assembler.options.label"),
    ({"filename": "../root.img"}, ".assembler.options.filename"),
    ({"compression": "xz"}, ".assembler.options"),
])
def test_bad_options_are_refused_before_anything_runs(libdir, tmp_path, options, path):
    stderr = rejected(libdir, tmp_path / "store", [tree_stage()], rawfs(**options))
    assert f"<stdin>: {path}: " in stderr


# -- the library directly: images inside a partitioned disk ------------------------------------


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("box\n")
    return tree


def partitioned_disk(path: Path, size: int) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "--quiet", str(path)], input="label: dos\nlabel-id: 0x1234abcd\nstart=2048, type=83\n",
                   text=True, check=True)
    with open(path, "rb") as f:
        return f.read(512)


def test_ext4_at_an_offset_leaves_the_partition_table_alone(small_tree, tmp_path):
    disk = tmp_path / "disk.img"
    mbr = partitioned_disk(disk, 40 << 20)
    fsimage.make_ext4(str(small_tree), str(disk), size=20 << 20, uuid=FS_UUID, label="root", offset=1 << 20,
                      source_epoch=EPOCH)
    assert disk.read_bytes()[:512] == mbr
    assert disk.stat().st_size == 40 << 20
    ids = blkid(disk, 1 << 20)
    assert (ids["TYPE"], ids["UUID"]) == ("ext4", FS_UUID)
    assert tool("debugfs", "-R", "cat /etc/hostname", f"{disk}?offset={1 << 20}") == "box\n"


def test_xfs_at_an_offset_is_the_same_filesystem_as_alone(small_tree, tmp_path):
    disk = tmp_path / "disk.img"
    mbr = partitioned_disk(disk, (XFS_SIZE) + (2 << 20))
    fsimage.make_xfs(str(small_tree), str(disk), size=XFS_SIZE, uuid=FS_UUID, offset=1 << 20, source_epoch=EPOCH)
    alone = tmp_path / "alone.img"
    fsimage.make_xfs(str(small_tree), str(alone), size=XFS_SIZE, uuid=FS_UUID, source_epoch=EPOCH)
    with open(disk, "rb") as f:
        assert f.read(512) == mbr
        f.seek(1 << 20)
        assert f.read(XFS_SIZE) == alone.read_bytes()
    assert not list(tmp_path.glob("*.xfs-tmp"))


@pytest.mark.parametrize(("call", "message"), [
    ({"uuid": "nope"}, "is not a UUID"),
    ({"size": 1000}, "must be a positive multiple of 512"),
    ({"offset": 100}, "must be a non-negative multiple of 512"),
    ({"label": "seventeen-letters"}, "must be 1 to 16 bytes"),
])
def test_make_ext4_refuses_bad_arguments_in_one_line(small_tree, tmp_path, call, message):
    arguments = {"size": EXT4_SIZE, "uuid": FS_UUID, **call}
    with pytest.raises(StageError, match=message):
        fsimage.make_ext4(str(small_tree), str(tmp_path / "fs.img"), **arguments)


ODD_NAMES = [b"x'y", b"back\\slash", b"#hash", b'a"b', b"semi;colon", b"col:on", b"caf\xc3\xa9", b"bad\xff"]


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """Names that need quoting or are not UTF-8, each with its own mtime, and unsorted xattrs on one."""
    tree = tmp_path / "odd"
    tree.mkdir()
    for i, name in enumerate(ODD_NAMES):
        path = os.path.join(os.fsencode(tree), name)
        with open(path, "wb") as f:
            f.write(name)
        os.utime(path, ns=(0, (OLD + i) * 10**9))
    odd = os.path.join(os.fsencode(tree), b"bad\xff")
    os.setxattr(odd, "user.zeta", b"z")
    os.setxattr(odd, "user.alpha", b"\x00\xff")
    return tree


def test_ext4_odd_names_keep_times_and_sorted_xattrs(odd_tree, tmp_path):
    image = tmp_path / "fs.img"
    fsimage.make_ext4(str(odd_tree), str(image), size=EXT4_SIZE, uuid=FS_UUID, source_epoch=EPOCH)
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(image)], capture_output=True, check=True).stdout
    inodes = {line.split(b"/")[5]: line.split(b"/")[1].decode() for line in listing.splitlines() if line.count(b"/") >= 7}
    for i, name in enumerate(ODD_NAMES):
        assert f"mtime: 0x{OLD + i:08x}:00000000" in debugfs_stat(image, f"<{inodes[name]}>"), name
    odd = inodes[b"bad\xff"]
    xattrs = tool("debugfs", "-R", f"ea_list <{odd}>", str(image))
    assert xattrs.index("user.alpha (2) = 00 ff") < xattrs.index('user.zeta (1) = "z"')


def test_xfs_odd_names_keep_times(odd_tree, tmp_path):
    image = tmp_path / "fs.img"
    fsimage.make_xfs(str(odd_tree), str(image), size=XFS_SIZE, uuid=FS_UUID, source_epoch=EPOCH)
    listing = subprocess.run(["xfs_db", "-r", "-c", "path /", "-c", "ls", str(image)], capture_output=True,
                             check=True).stdout
    inodes = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        inodes[fields[5][:int(fields[4])]] = fields[1].decode()
    for i, name in enumerate(ODD_NAMES):
        output = tool("xfs_db", "-r", "-c", f"inode {inodes[name]}", "-c", "print core.mtime.sec", str(image))
        assert output.strip() == "core.mtime.sec = " + time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(OLD + i)), name
