"""org.osbuild.debian.bootstrap: a Debian tree made of exactly the locked packages, offline."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from conftest import SOURCE_EPOCH, assert_rejected, build_failure, build_json

STAGE = "org.osbuild.debian.bootstrap"
DEB = {"name": "hello", "version": "2.10-3", "arch": "amd64", "checksum": "sha256:" + "0" * 64}
SOURCES_LIST_HEADER = "# Written by osbuild from the manifest's apt_sources.\n"


def installed(tree: Path) -> set[tuple[str, str, str]]:
    """(name, version, architecture) of every package dpkg's database in the tree says is installed."""
    output = subprocess.run(
        ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "--show",
         "--showformat=${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n"],
        check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in output.splitlines()]
    return {(name, version, arch) for name, version, arch, status in rows if status == "installed"}


def locked(debian_base) -> set[tuple[str, str, str]]:
    return {(deb["name"], deb["version"], deb["arch"]) for deb in debian_base.stages[0]["options"]["debs"]}


def test_tree_has_exactly_the_locked_packages(debian_base, shared_store):
    tree = debian_base.tree(shared_store)
    assert installed(tree) == locked(debian_base)
    # The request's packages are among them.
    assert {"systemd", "apt", "base-files"} <= {name for name, _, _ in installed(tree)}


def test_image_apt_points_at_the_mirror(debian_base, shared_store):
    tree = debian_base.tree(shared_store)
    sources = debian_base.stages[0]["options"]["apt_sources"]
    assert (tree / "etc/apt/sources.list").read_text() == SOURCES_LIST_HEADER + "".join(f"{line}\n" for line in sources)
    # Nothing of the build's local repository is left: no other source, no index, no package file.
    assert list((tree / "etc/apt/sources.list.d").iterdir()) == []
    assert {p.name for p in (tree / "var/lib/apt/lists").iterdir()} <= {"lock", "partial"}
    assert list(tree.glob("var/cache/apt/**/*.deb")) == []
    assert list(tree.glob("var/cache/apt/*.bin")) == []


def test_metadata_lists_the_installed_packages(debian_base, shared_store):
    result = build_json(debian_base.manifest(), shared_store)
    packages = result["metadata"]["tree"][STAGE]["packages"]
    assert {(p["name"], p["version"], p["arch"]) for p in packages} == locked(debian_base)
    assert [p["name"] for p in packages] == sorted(p["name"] for p in packages)
    assert all(sorted(p) == ["arch", "name", "version"] for p in packages)


def test_a_lock_without_its_files_fails_naming_the_package(debian_base, shared_store):
    stage = copy.deepcopy(debian_base.stages[0])
    deb = next(deb for deb in stage["options"]["debs"] if deb["name"] == "dpkg")
    deb["checksum"] = "sha256:" + "0" * 64
    report = build_failure([stage], shared_store, sources=debian_base.sources, source_epoch=SOURCE_EPOCH)
    assert (f"error: package dpkg {deb['version']}: source sha256:{'0' * 64} is not available to this stage "
            "(is it listed in the manifest's sources?)") in report


@pytest.mark.parametrize(("options", "path"), [
    ({"suite": "bookworm"}, ".stages[0].options"),
    ({"suite": "bookworm", "debs": []}, ".stages[0].options.debs"),
    ({"suite": "Bookworm", "debs": [DEB]}, ".stages[0].options.suite"),
    ({"suite": "bookworm", "debs": [dict(DEB, checksum="md5:0")]}, ".stages[0].options.debs[0].checksum"),
    ({"suite": "bookworm", "debs": [{"name": "a", "version": "1", "checksum": DEB["checksum"]}]},
     ".stages[0].options.debs[0]"),
    ({"suite": "bookworm", "variant": "tiny", "debs": [DEB]}, ".stages[0].options.variant"),
    ({"suite": "bookworm", "apt_sources": ["http://deb.debian.org/debian bookworm main"], "debs": [DEB]},
     ".stages[0].options.apt_sources[0]"),
    ({"suite": "bookworm", "debs": [DEB], "mirror": "http://deb.debian.org/debian"}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
