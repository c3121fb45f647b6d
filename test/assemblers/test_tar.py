"""org.osbuild.tar: the archive holds the tree exactly, and the same tree always gives the same bytes."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from assemblerlib import ENTRIES, OLD, ROOT, assemble, export, make_libdir, rejected, sha256, tree_stage
from conftest import REPO

EPOCH = 1700000000
MAGIC = {"gzip": b"\x1f\x8b", "xz": b"\xfd7zXZ\x00", "zstd": b"\x28\xb5\x2f\xfd", "bzip2": b"BZh"}
DECOMPRESS = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"], "bzip2": ["bzip2", "-dc"]}

LISTING = """\
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./dev/
crw-rw-rw- 0/0             1,3 2020-09-13 12:26 ./dev/null
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./etc/
-rw-r--r-- 0/0               4 2020-09-13 12:26 ./etc/hostname
hrw-r--r-- 0/0               0 2020-09-13 12:26 ./etc/hostname.hardlink link to ./etc/hostname
-rw------- 0/0               6 2020-09-13 12:26 ./etc/motd
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./home/
drwx------ 1000/1000         0 2020-09-13 12:26 ./home/user/
-rw-r--r-- 1000/1000         5 2020-09-13 12:26 ./home/user/notes.txt
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./run/
prw------- 0/0               0 2020-09-13 12:26 ./run/initctl
drwxrwxrwt 0/0               0 2020-09-13 12:26 ./tmp/
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./usr/
drwxr-xr-x 0/0               0 2020-09-13 12:26 ./usr/bin/
-rwxr-xr-x 0/0              10 2020-09-13 12:26 ./usr/bin/ping
lrwxrwxrwx 0/0               0 2020-09-13 12:26 ./usr/bin/sh -> ping
-rwsr-xr-x 0/0              10 2020-09-13 12:26 ./usr/bin/su
"""


@pytest.fixture(scope="module")
def libdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_libdir(tmp_path_factory.mktemp("lib"))


def tar_assembler(**options: Any) -> dict[str, Any]:
    return {"name": "org.osbuild.tar", "options": {"filename": "root.tar", **options}}


def run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, env=dict(os.environ, TZ="UTC"), **kwargs)


def test_archive_lists_the_tree_and_extracts_to_it(libdir, tmp_path):
    store = tmp_path / "store"
    archive = assemble(libdir, store, tmp_path / "out", [tree_stage()], tar_assembler()) / "root.tar"
    assert run("tar", "-tvv", "-f", str(archive)).stdout == LISTING

    members = {m.name: m for m in tarfile.open(archive)}
    assert members["./etc/hostname"].pax_headers == {
        "SCHILY.xattr.user.alpha": "a", "SCHILY.xattr.user.middle": "m", "SCHILY.xattr.user.zeta": "z"}
    assert "SCHILY.xattr.security.capability" in members["./usr/bin/ping"].pax_headers
    assert members["./etc/motd"].pax_headers == {"mtime": f"{OLD + 2}.5"}
    assert not any("atime" in m.pax_headers or "ctime" in m.pax_headers for m in members.values())

    extracted = tmp_path / "extracted"
    extracted.mkdir()
    run("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", str(archive), "-C", str(extracted))
    tree = export(libdir, store, tmp_path / "out", [tree_stage()])
    diff = subprocess.run([str(REPO / "tools/tree-diff"), str(tree), str(extracted)], capture_output=True, text=True,
                          check=False)
    assert diff.returncode == 0, diff.stdout
    assert os.stat(extracted / "etc/hostname").st_ino == os.stat(extracted / "etc/hostname.hardlink").st_ino
    assert os.stat(extracted / "etc/motd").st_mtime_ns == (OLD + 2) * 10**9 + 500000000


@pytest.mark.parametrize("compression", ["none", "gzip", "xz", "zstd", "bzip2"])
def test_same_tree_from_two_stores_gives_the_same_bytes(libdir, tmp_path, compression):
    """Two stores build the tree by different routes (creation order, xattr order, inode numbers, ctimes)."""
    options = {} if compression == "none" else {"compression": compression}
    first = assemble(libdir, tmp_path / "store-a", tmp_path / "out-a", [tree_stage()], tar_assembler(**options))
    second = assemble(libdir, tmp_path / "store-b", tmp_path / "out-b", [tree_stage(reverse=True)],
                      tar_assembler(**options))
    assert sha256(first / "root.tar") == sha256(second / "root.tar")
    if compression == "none":
        return
    data = (first / "root.tar").read_bytes()
    assert data.startswith(MAGIC[compression])
    if compression == "gzip":
        assert data[3] & 0x08 == 0, "gzip header records a file name"
        assert data[4:8] == b"\0\0\0\0", "gzip header records a time"
    plain = assemble(libdir, tmp_path / "store-a", tmp_path / "out-plain", [tree_stage()], tar_assembler())
    unpacked = subprocess.run([*DECOMPRESS[compression], str(first / "root.tar")], check=True, capture_output=True).stdout
    assert unpacked == (plain / "root.tar").read_bytes()


def test_mtimes_are_clamped_to_the_source_epoch(libdir, tmp_path):
    entries = [*ENTRIES, {"path": "/etc/new", "text": "made at build time\n"}]
    stages = [tree_stage(entries, root={"mode": 0o755})]
    first = assemble(libdir, tmp_path / "store-a", tmp_path / "out-a", stages, tar_assembler(), source_epoch=EPOCH)
    second = assemble(libdir, tmp_path / "store-b", tmp_path / "out-b", [tree_stage(entries, reverse=True, root={})],
                      tar_assembler(), source_epoch=EPOCH)
    members = {m.name: m for m in tarfile.open(first / "root.tar")}
    assert members["./etc/new"].mtime == EPOCH
    assert members["."].mtime == EPOCH
    assert members["./etc/hostname"].mtime == OLD + 1
    assert sha256(first / "root.tar") == sha256(second / "root.tar")


def test_xattrs_acls_and_selinux_can_be_left_out(libdir, tmp_path):
    out = assemble(libdir, tmp_path / "store", tmp_path / "out", [tree_stage()],
                   tar_assembler(xattrs=False, acls=False, selinux=False))
    headers = [m.pax_headers for m in tarfile.open(out / "root.tar")]
    assert not any(key.startswith("SCHILY.xattr.") for h in headers for key in h)
    assert len(headers) == len(LISTING.splitlines())


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "dir/root.tar"}, ".assembler.options.filename"),
    ({"filename": ".."}, ".assembler.options.filename"),
    ({"filename": "root.tar", "compression": "lz4"}, ".assembler.options.compression"),
    ({"filename": "root.tar", "level": 9}, ".assembler.options"),
    ({}, ".assembler.options"),
])
def test_bad_options_are_refused_before_anything_runs(libdir, tmp_path, options, path):
    stderr = rejected(libdir, tmp_path / "store", [tree_stage()], {"name": "org.osbuild.tar", "options": options})
    assert f"<stdin>: {path}: " in stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("root.tar"))


def test_root_entry_keeps_the_tree_root_mode(libdir, tmp_path):
    out = assemble(libdir, tmp_path / "store", tmp_path / "out", [tree_stage(root={**ROOT, "mode": 0o750})],
                   tar_assembler())
    root = next(iter(tarfile.open(out / "root.tar")))
    assert (root.name, root.mode, root.type) == (".", 0o750, tarfile.DIRTYPE)
