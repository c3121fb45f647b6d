"""org.osbuild.tar and org.osbuild.untar: a tree into an archive, an archive into a tree (formats 1 and 2)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from conftest import assert_changes, assert_rejected, build_failure, run_osbuild, stage_changes
from testlib import pipeline_file_input, tree_input, v2_manifest, v2_pipeline, v2_stage

from osbuild.treediff import diff

EPOCH = 1700000000
FILES = [
    {"path": "/etc/issue", "text": "Welcome\n"},
    {"path": "/srv/site/index.html", "text": "<p>hi</p>\n", "uid": 1234, "gid": 4321},
    {"path": "/srv/site/style.css", "text": "p {}\n", "mode": 0o600},
]


def content() -> dict[str, Any]:
    return v2_pipeline("os", v2_stage("org.osbuild.copy", files=FILES), source_epoch=EPOCH)


def archive(name: str, **options: Any) -> dict[str, Any]:
    return v2_pipeline(name, v2_stage("org.osbuild.tar", {"tree": tree_input("os")}, **options), source_epoch=EPOCH)


def build(manifest: dict[str, Any], export: str, store: Path, out: Path) -> Path:
    run_osbuild("--store", str(store), "--output-directory", str(out), "--export", export, manifest=manifest)
    return out / export


def members(path: Path) -> list[str]:
    """`tar -tv` lines: mode, numeric owner, size, date, name."""
    listing = subprocess.run(["tar", "--list", "--verbose", "--numeric-owner", "--utc", f"--file={path}"],
                             capture_output=True, text=True, check=True).stdout
    return [" ".join(line.split()) for line in listing.splitlines()]


def test_a_pipelines_tree_archived_with_owners_modes_and_clamped_times(shared_store, tmp_path):
    manifest = v2_manifest(content(), archive("archive", filename="os.tar", format="posix", **{"numeric-owner": True}))
    out = build(manifest, "archive", shared_store, tmp_path / "one")
    assert sorted(p.name for p in out.iterdir()) == ["os.tar"]
    assert members(out / "os.tar") == [
        "drwxr-xr-x 0/0 0 2023-11-14 22:13 ./",
        "drwxr-xr-x 0/0 0 2023-11-14 22:13 ./etc/",
        "-rw-r--r-- 0/0 8 2023-11-14 22:13 ./etc/issue",
        "drwxr-xr-x 0/0 0 2023-11-14 22:13 ./srv/",
        "drwxr-xr-x 0/0 0 2023-11-14 22:13 ./srv/site/",
        "-rw-r--r-- 1234/4321 10 2023-11-14 22:13 ./srv/site/index.html",
        "-rw------- 0/0 5 2023-11-14 22:13 ./srv/site/style.css",
    ]
    # Another store builds the tree again, with other inodes and ctimes: the same bytes.
    again = build(manifest, "archive", tmp_path / "store", tmp_path / "two")
    assert hashlib.sha256((out / "os.tar").read_bytes()).digest() == hashlib.sha256((again / "os.tar").read_bytes()).digest()


def test_root_node_omitted_chosen_paths_and_compression_by_name(shared_store, tmp_path):
    manifest = v2_manifest(content(), archive("omit", filename="/out/omit.tar.zst", **{"root-node": "omit"}),
                           archive("paths", filename="paths.tar.gz", paths=["srv/site/style.css", "/etc"]))
    omit = build(manifest, "omit", shared_store, tmp_path)
    unpacked = subprocess.run(["zstd", "-d", "--stdout", str(omit / "out/omit.tar.zst")], capture_output=True, check=True)
    (tmp_path / "omit.tar").write_bytes(unpacked.stdout)
    assert [line.split()[-1] for line in members(tmp_path / "omit.tar")] == [
        "etc/", "etc/issue", "srv/", "srv/site/", "srv/site/index.html", "srv/site/style.css"]
    paths = build(manifest, "paths", shared_store, tmp_path)
    assert (paths / "paths.tar.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert [line.split()[-1] for line in members(paths / "paths.tar.gz")] == ["srv/site/style.css", "etc/", "etc/issue"]


def test_untar_unpacks_another_pipelines_archive_with_owners_and_modes(shared_store, tmp_path):
    unpack = v2_pipeline("unpacked", v2_stage("org.osbuild.untar", {"file": pipeline_file_input("archive", "/os.tar.xz")},
                                              prefix="/restore"), source_epoch=EPOCH)
    manifest = v2_manifest(content(), archive("archive", filename="os.tar.xz", format="posix"), unpack)
    tree = build(manifest, "unpacked", shared_store, tmp_path / "unpacked")
    original = build(manifest, "os", shared_store, tmp_path / "original")
    # What was archived comes back below the prefix, file for file.
    assert diff(str(original), str(tree / "restore")) == {"added": {}, "removed": {}, "changed": {}}
    assert (tree / "restore/srv/site/index.html").stat().st_uid == 1234


def test_format_1_archives_a_directory_of_the_tree_and_unpacks_it(shared_store):
    base = [{"name": "org.osbuild.copy", "options": {"files": FILES}}]
    stages = [{"name": "org.osbuild.tar", "options": {"source": "/srv", "filename": "/var/srv.tar", "format": "posix"}},
              {"name": "org.osbuild.untar", "options": {"path": "/var/srv.tar", "prefix": "/opt/copy"}}]
    changes = stage_changes(base, stages, shared_store, source_epoch=EPOCH)
    assert_changes(changes, {"added": {
        "/var": {"type": "dir", "mode": "0755"},
        "/var/srv.tar": {"type": "file", "mode": "0644", "uid": 0},
        "/opt": {"type": "dir"},
        "/opt/copy": {"type": "dir"},
        "/opt/copy/site": {"type": "dir", "mode": "0755"},
        "/opt/copy/site/index.html": {"type": "file", "uid": 1234, "gid": 4321, "text": "<p>hi</p>\n"},
        "/opt/copy/site/style.css": {"type": "file", "mode": "0600", "text": "p {}\n"},
    }})


def test_an_archive_inside_what_it_archives_is_refused_in_one_line(shared_store):
    report = build_failure([{"name": "org.osbuild.copy", "options": {"files": FILES}},
                            {"name": "org.osbuild.tar", "options": {"source": "/srv", "filename": "/srv/self.tar"}}],
                           shared_store)
    assert "error: filename /srv/self.tar lies inside the archived directory" in report


def test_bad_options_are_refused_before_anything_runs(shared_store):
    assert_rejected("org.osbuild.tar", {"source": "/srv", "filename": "a.tar", "paths": ["etc"], "root-node": "omit"},
                    ".stages[0].options", shared_store)
    assert_rejected("org.osbuild.tar", {"source": "/srv", "filename": "a.tar", "format": "zip"},
                    ".stages[0].options.format", shared_store)
    assert_rejected("org.osbuild.untar", {"path": "/a.tar", "strip": 1}, ".stages[0].options", shared_store)
