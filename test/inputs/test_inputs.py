"""Format-2 inputs in real builds: trees and files of other pipelines and sources, read-only, as osbuild's stages see them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from testlib import (
    Library,
    inline_source,
    objects_in,
    pipeline_file_input,
    source_files_input,
    tree_input,
    v2_manifest,
    v2_pipeline,
    v2_stage,
)

DATA = b"a file from the manifest itself\n"
CHECKSUM, INLINE = inline_source(DATA)
READER = "org.osbuild.test.inputs"
# Copies every input into the tree under /got/NAME, records its arguments, and tries to write into each input.
READER_BODY = '''
def main(tree, options):
    args = osbuild.api.arguments()
    report = {"inputs": args["inputs"], "paths": args["paths"], "writes": {}}
    for name, item in sorted(args["inputs"].items()):
        for root, dirs, files in os.walk(item["path"]):
            for fn in files:
                src = os.path.join(root, fn)
                dst = os.path.join(tree, "got", name, os.path.relpath(src, item["path"]))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(src, "rb") as i, open(dst, "wb") as o:
                    o.write(i.read())
                report["writes"][name + "/" + os.path.relpath(src, item["path"])] = attempt(
                    lambda src=src: open(src, "ab").write(b"changed"))
        report["writes"][name + "/new-file"] = attempt(lambda item=item: open(os.path.join(item["path"], "new"), "w").write("x"))
    with open(os.path.join(tree, "report.json"), "w") as f:
        json.dump(report, f, sort_keys=True)
'''


@pytest.fixture
def reader(lib: Library) -> Library:
    lib.use_sources("org.osbuild.inline")
    lib.stage(READER, READER_BODY)
    return lib


def base_pipeline() -> dict[str, Any]:
    return v2_pipeline("os", v2_stage(files={"/etc/hostname": "box\n", "/usr/lib/os-release": "ID=test\n"}))


def reading(**inputs: dict[str, Any]) -> dict[str, Any]:
    return v2_manifest(base_pipeline(), v2_pipeline("image", v2_stage(READER, inputs=inputs)), sources=INLINE)


def export(lib: Library, manifest: dict[str, Any], tmp_path: Path, name: str = "image") -> Path:
    return lib.build_tree(manifest, tmp_path / "store", tmp_path / "out", export=name)


def test_a_stage_reads_trees_and_files_under_run_osbuild_inputs(reader: Library, tmp_path: Path) -> None:
    manifest = reading(tree=tree_input("os"), pkgs=source_files_input(CHECKSUM),
                       conf=pipeline_file_input("os", "/etc/hostname"))
    tree = export(reader, manifest, tmp_path)
    assert (tree / "got/tree/etc/hostname").read_text() == "box\n"
    assert (tree / "got/tree/usr/lib/os-release").read_text() == "ID=test\n"
    assert (tree / "got/pkgs" / CHECKSUM).read_bytes() == DATA
    assert (tree / "got/conf/etc/hostname").read_text() == "box\n"
    assert sorted(p.name for p in (tree / "got/conf").rglob("*") if p.is_file()) == ["hostname"], \
        "a file input from a pipeline holds that file, not the tree"
    report = json.loads((tree / "report.json").read_text())
    assert report["inputs"] == {
        "tree": {"path": "/run/osbuild/inputs/tree"},
        "pkgs": {"path": "/run/osbuild/inputs/pkgs", "data": {"files": {CHECKSUM: {}}}},
        "conf": {"path": "/run/osbuild/inputs/conf", "data": {"files": {"etc/hostname": {}}}},
    }
    assert report["paths"]["inputs"] == "/run/osbuild/inputs"


def test_inputs_are_read_only_and_the_store_is_untouched(reader: Library, tmp_path: Path) -> None:
    manifest = reading(tree=tree_input("os"), pkgs=source_files_input(CHECKSUM),
                       conf=pipeline_file_input("os", "/etc/hostname"))
    tree = export(reader, manifest, tmp_path)
    writes = json.loads((tree / "report.json").read_text())["writes"]
    assert writes, "the stage tried to write"
    for what, outcome in writes.items():
        # EROFS, or EACCES where the file belongs to the host's root, whom the sandbox's root is not.
        assert outcome["ok"] is False and outcome["errno"] in (13, 30), f"{what}: {outcome}"
    cached = tmp_path / "store/sources/org.osbuild.files" / CHECKSUM
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == CHECKSUM.split(":")[1]
    os_tree = reader.build_tree(manifest, tmp_path / "store", tmp_path / "out-os", export="os")
    assert (os_tree / "etc/hostname").read_text() == "box\n"
    assert not (os_tree / "etc/new").exists()


def test_metadata_of_a_reference_reaches_the_stage(reader: Library, tmp_path: Path) -> None:
    pkgs = {"type": "org.osbuild.files", "origin": "org.osbuild.source",
            "references": [{"id": CHECKSUM, "options": {"metadata": {"rpm.check_gpg": True}}}]}
    tree = export(reader, reading(pkgs=pkgs), tmp_path)
    report = json.loads((tree / "report.json").read_text())
    assert report["inputs"]["pkgs"]["data"]["files"] == {CHECKSUM: {"rpm.check_gpg": True}}


def test_a_file_input_follows_symlinks_inside_its_tree_only(reader: Library, tmp_path: Path) -> None:
    """A symlink in the tree is resolved against the tree's root: /link -> /etc/hostname is the tree's file,
    and a link to a path only the host has gives no file at all."""
    os_pipeline = v2_pipeline("os", v2_stage(files={"/etc/hostname": "tree's own\n"}),
                              v2_stage("org.osbuild.test.links",
                                       links={"/link": "/etc/hostname", "/up": "../../../../etc/passwd"}))
    reader.stage("org.osbuild.test.links", '''
def main(tree, options):
    for path, target in options["links"].items():
        os.symlink(target, os.path.join(tree, path.lstrip("/")))
''')
    good = v2_manifest(os_pipeline, v2_pipeline("image", v2_stage(READER, inputs={"f": pipeline_file_input("os", "/link")})))
    tree = export(reader, good, tmp_path)
    assert (tree / "got/f/link").read_text() == "tree's own\n"
    escape = v2_manifest(os_pipeline, v2_pipeline("image", v2_stage(READER, inputs={"f": pipeline_file_input("os", "/up")})))
    proc = reader.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out2"), "--export", "image",
                      manifest=escape, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "input f: file /up of pipeline os: no such file" in proc.stderr


def test_export_builds_that_pipeline_and_what_it_needs_only(reader: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    manifest = v2_manifest(
        v2_pipeline("build", v2_stage(files={"/marker": "build"})),
        base_pipeline(),
        v2_pipeline("unrelated", v2_stage(files={"/unrelated": "x"})),
        v2_pipeline("image", v2_stage(READER, inputs={"tree": tree_input("os")})),
        sources=INLINE,
    )
    result = reader.build_json(manifest, store, "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert set(result["pipelines"]) == {"os", "image"}
    assert len(objects_in(store)) == 2
    assert (tmp_path / "out/image/got/tree/etc/hostname").exists()
    assert not (tmp_path / "out/os").exists()
    again = reader.build_json(manifest, store, "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert [s["status"] for p in again["pipelines"].values() for s in p["stages"]] == ["cached", "cached"]


def test_without_export_nothing_is_built(reader: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = reader.run("--store", str(store), manifest=reading(tree=tree_input("os")))
    assert objects_in(store) == set()
    assert "nothing to build" in proc.stdout
    result = reader.build_json(reading(tree=tree_input("os")), store)
    assert result["success"] is True and result["pipelines"] == {} and result["log"] == {}


def test_a_format_1_assembler_makes_the_output_of_a_format_2_pipeline(reader: Library, tmp_path: Path) -> None:
    manifest = v2_manifest(base_pipeline(), v2_pipeline("image", {
        "type": "org.osbuild.test.asm", "options": {"random": {"disk.img": 4096}}, "inputs": {"tree": tree_input("os")}}))
    out = export(reader, manifest, tmp_path)
    assert (out / "disk.img").stat().st_size == 4096
    assert json.loads((out / "listing.json").read_text()) == ["etc/hostname", "usr/lib/os-release"]
