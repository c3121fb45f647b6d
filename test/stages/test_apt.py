"""org.osbuild.apt: locked packages added to a Debian tree with the tree's own apt, offline."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_json

STAGE = "org.osbuild.apt"


def package_files(url: str, checksum: str, tmp: Path) -> dict[str, dict[str, Any]]:
    """What a .deb installs, read from the mirror's file: each path with its type, mode and sha256 or target."""
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == checksum
    deb = tmp / "package.deb"
    deb.write_bytes(data)
    payload = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    files: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in tar.getmembers():
            path = "/" + os.path.normpath(member.name)
            entry: dict[str, Any] = {"mode": f"{member.mode:04o}", "uid": 0, "gid": 0}
            if member.isfile():
                content = tar.extractfile(member)
                assert content is not None
                entry.update(type="file", sha256=hashlib.sha256(content.read()).hexdigest())
            elif member.issym():
                entry.update(type="symlink", target=member.linkname)
                del entry["mode"]
            else:
                entry["type"] = "dir"
            files[path] = entry
    return files


@pytest.fixture(scope="module")
def hello(debian_base) -> dict[str, Any]:
    """A manifest that locks `hello` for an apt stage on top of the Debian base."""
    return debian_base.lock_apt(["hello"])


def test_apt_adds_the_packages_files_and_dpkgs_records(debian_base, hello, shared_store, tmp_path):
    stage = hello["pipeline"]["stages"][1]
    # hello needs only libc6, which the base has: the lock holds hello alone.
    [deb] = stage["options"]["debs"]
    assert deb["name"] == "hello"
    url = hello["sources"]["org.osbuild.files"]["urls"][deb["checksum"]]["url"]
    files = package_files(url, deb["checksum"], tmp_path)
    base = debian_base.tree(shared_store)
    # The package's directories that the base has already (/usr, /usr/share/doc, ...) do not change.
    expected = {path: entry for path, entry in files.items() if not os.path.lexists(base / path.lstrip("/"))}
    assert expected["/usr/bin/hello"]["mode"] == "0755"

    changes = debian_base.changes([stage], shared_store, sources=hello["sources"])
    # dpkg's records of the package; no log, no cache, no policy-rc.d, no staged .deb stay behind.
    expected["/var/lib/dpkg/info/hello.list"] = {"type": "file"}
    expected["/var/lib/dpkg/info/hello.md5sums"] = {"type": "file"}
    assert_changes(changes, {"added": expected, "changed": {"/var/lib/dpkg/status": {}, "/var/lib/dpkg/status-old": {}}})
    assert "/usr/sbin/policy-rc.d" not in changes["added"]

    assert set(files) <= set(changes["added"]["/var/lib/dpkg/info/hello.list"]["text"].splitlines())


def test_metadata_lists_the_added_packages(debian_base, hello, shared_store):
    stage = hello["pipeline"]["stages"][1]
    [deb] = stage["options"]["debs"]
    result = build_json(debian_base.manifest([stage], sources=hello["sources"]), shared_store)
    assert result["metadata"]["tree"][STAGE] == {"packages": [{"name": "hello", "version": deb["version"], "arch": "amd64"}]}


def test_a_package_without_its_file_fails_naming_it(debian_base, shared_store):
    deb = {"name": "hello", "version": "2.10-3", "arch": "amd64", "checksum": "sha256:" + "1" * 64}
    report = debian_base.failure([{"name": STAGE, "options": {"debs": [deb]}}], shared_store)
    assert f"error: package hello 2.10-3: source sha256:{'1' * 64} is not available to this stage" in report


@pytest.mark.parametrize(("options", "path"), [
    ({}, ".stages[0].options"),
    ({"debs": [{"name": "hello", "version": "1", "arch": "amd64"}]}, ".stages[0].options.debs[0]"),
    ({"debs": [{"name": "hello", "version": "1", "arch": "amd64", "checksum": "sha256:abc"}]},
     ".stages[0].options.debs[0].checksum"),
    ({"debs": [], "recommends": True}, ".stages[0].options"),
    ({"debs": [], "include": "hello"}, ".stages[0].options.include"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
