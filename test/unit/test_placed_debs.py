"""The Debian stages see their locked packages under apt's names without copying them (osbuild.debian.placed_debs).

Each case runs placed_debs in a child process with a mount namespace of its own, so
that a mount it forgot to remove would show in that namespace's mount table, and
could not outlive the child on the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces of root")

# Runs in the child: places the packages, reports what each name is while the block runs and after it.
CHILD = r"""
import json, os, sys
from osbuild.debian import placed_debs
options, directory, args = json.loads(sys.argv[1])
seen = {}
with placed_debs(options, directory, args) as names:
    for name in names:
        path = os.path.join(directory, name)
        st = os.stat(path)
        with open(path, "rb") as f:
            seen[name] = {"inode": [st.st_dev, st.st_ino], "data": f.read().hex()}
    with open("/proc/self/mountinfo") as f:
        mounts_inside = sum(directory in line for line in f)
with open("/proc/self/mountinfo") as f:
    mounts_after = sum(directory in line for line in f)
print(json.dumps({"names": names, "seen": seen, "mounts_inside": mounts_inside, "mounts_after": mounts_after,
                  "left": sorted(os.listdir(directory))}))
"""

PACKAGES = [("base-files", "12.4+deb12u1", "amd64"), ("libc6", "2:2.36-9", "amd64")]


def packages_input(inputs: Path) -> dict[str, Any]:
    """A format-2 packages input of two small files, as the engine presents it: files by checksum, with metadata."""
    inputs.mkdir()
    files = {}
    for name, version, arch in PACKAGES:
        data = f"not really {name} {version}\n".encode()
        checksum = "sha256:" + hashlib.sha256(data).hexdigest()
        (inputs / checksum).write_bytes(data)
        files[checksum] = {"deb.name": name, "deb.version": version, "deb.arch": arch}
    return {"inputs": {"packages": {"path": str(inputs), "data": {"files": files}}}}


def place(tmp_path: Path, mounts: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run placed_debs in a child with a mount namespace of its own; without `mounts`, the child may not mount."""
    args = packages_input(tmp_path / "inputs")
    directory = tmp_path / "archives"
    directory.mkdir()
    # unshare itself needs CAP_SYS_ADMIN, so only the Python it runs loses it.
    no_mounts = [] if mounts else ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
    child = ["unshare", "--mount", "--propagation", "private", *no_mounts,
             sys.executable, "-c", CHILD, json.dumps([{}, str(directory), args])]
    proc = subprocess.run(child, check=False, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), args


def inputs_by_name(report: dict[str, Any], args: dict[str, Any]) -> dict[str, tuple[os.stat_result, bytes]]:
    """Each placed name's input file: its stat and its bytes."""
    entry = args["inputs"]["packages"]
    found = {}
    for name, checksum in zip(report["names"], entry["data"]["files"]):
        path = Path(entry["path"]) / checksum
        found[name] = (os.stat(path), path.read_bytes())
    return found


def test_packages_are_their_input_files_under_apts_names(tmp_path: Path) -> None:
    report, args = place(tmp_path)
    assert report["names"] == ["base-files_12.4+deb12u1_amd64.deb", "libc6_2%3a2.36-9_amd64.deb"]
    for name, (st, data) in inputs_by_name(report, args).items():
        # the input's own inode: bound, not copied
        assert report["seen"][name]["inode"] == [st.st_dev, st.st_ino]
        assert bytes.fromhex(report["seen"][name]["data"]) == data
    assert report["mounts_inside"] == 2
    assert report["mounts_after"] == 0
    assert report["left"] == []


def test_without_mount_rights_the_packages_are_copied(tmp_path: Path) -> None:
    report, args = place(tmp_path, mounts=False)
    assert len(report["names"]) == 2
    for name, (st, data) in inputs_by_name(report, args).items():
        assert report["seen"][name]["inode"] != [st.st_dev, st.st_ino]
        assert bytes.fromhex(report["seen"][name]["data"]) == data
    assert report["mounts_inside"] == 0
    assert report["left"] == []
