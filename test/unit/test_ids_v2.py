"""Format-2 ids: inputs, devices and mounts count, pipeline names never do; format-1 records are what docs/ids.md says."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from testlib import Library, pipeline_file_input, source_files_input, tree_input, v2_manifest, v2_pipeline, v2_stage

from osbuild.formats import v1, v2
from osbuild.meta import Index
from osbuild.pipeline import canonical_json
from osbuild.sandbox import library_digest

A = "sha256:" + hashlib.sha256(b"a").hexdigest()
B = "sha256:" + hashlib.sha256(b"b").hexdigest()
SOURCES = {"org.osbuild.curl": {"items": {A: "http://example.org/a", B: "http://example.org/b"}}}


def base() -> dict[str, Any]:
    return v2_manifest(
        v2_pipeline("build", v2_stage(files={"/usr/bin/x": "x"}), runner="org.osbuild.linux"),
        v2_pipeline("os", v2_stage(files={"/etc/hostname": "box\n"}), build="name:build"),
        v2_pipeline("image", v2_stage(inputs={"tree": tree_input("os"), "pkgs": source_files_input(A)}), build="name:build"),
        sources=SOURCES,
    )


def ids(description: dict[str, Any], lib: Library) -> dict[str, str | None]:
    index = Index(str(lib.root))
    assert v2.validate(description, index) == []
    return {p.name: p.id for p in v2.load(description, index).pipelines}


def with_curl(lib: Library) -> Library:
    return lib.use_sources("org.osbuild.curl")


def test_pipeline_names_do_not_enter_ids(lib: Library) -> None:
    before = ids(base(), with_curl(lib))
    renamed = json.loads(json.dumps(base()).replace('"name": "os"', '"name": "root"').replace("name:os", "name:root")
                         .replace('"name": "build"', '"name": "tools"').replace("name:build", "name:tools"))
    after = ids(renamed, lib)
    assert list(after) == ["tools", "root", "image"]
    assert list(after.values()) == list(before.values())


def test_an_input_changes_the_stages_id_with_what_it_provides(lib: Library) -> None:
    with_curl(lib)
    before = ids(base(), lib)
    other_file = copy.deepcopy(base())
    other_file["pipelines"][2]["stages"][0]["inputs"]["pkgs"]["references"] = [B]
    assert ids(other_file, lib)["image"] != before["image"]
    # The tree input's pipeline changed: the reading stage's id follows.
    other_tree = copy.deepcopy(base())
    other_tree["pipelines"][1]["stages"][0]["options"]["files"]["/etc/hostname"] = "other\n"
    changed = ids(other_tree, lib)
    assert changed["os"] != before["os"] and changed["image"] != before["image"] and changed["build"] == before["build"]
    # The input's name is what the stage reads it by: it counts.
    renamed_input = json.loads(json.dumps(base()).replace('"pkgs"', '"packages"'))
    assert ids(renamed_input, lib)["image"] != before["image"]
    # A URL is not part of an id; the checksum is.
    moved = copy.deepcopy(base())
    moved["sources"]["org.osbuild.curl"]["items"][A] = "http://mirror.example.org/a"
    assert ids(moved, lib) == before


def test_reference_options_count(lib: Library) -> None:
    with_curl(lib)
    one = copy.deepcopy(base())
    one["pipelines"][2]["stages"][0]["inputs"]["file"] = pipeline_file_input("os", "/etc/hostname")
    other = copy.deepcopy(one)
    other["pipelines"][2]["stages"][0]["inputs"]["file"] = pipeline_file_input("os", "/etc/os-release")
    assert ids(one, lib)["image"] != ids(other, lib)["image"]


def test_devices_and_mounts_count(lib: Library) -> None:
    with_curl(lib)
    disk = {"disk": {"type": "org.osbuild.loopback", "options": {"filename": "disk.img", "size": 100}}}
    mount = [{"name": "root", "type": "org.osbuild.ext4", "source": "disk", "target": "/"}]
    with_devices = copy.deepcopy(base())
    with_devices["pipelines"][2]["stages"][0]["devices"] = disk
    with_mounts = copy.deepcopy(with_devices)
    with_mounts["pipelines"][2]["stages"][0]["mounts"] = mount
    other_size = copy.deepcopy(with_mounts)
    other_size["pipelines"][2]["stages"][0]["devices"]["disk"]["options"]["size"] = 200
    results = [ids(m, lib)["image"] for m in (base(), with_devices, with_mounts, other_size)]
    assert len(set(results)) == 4


def test_format_1_and_format_2_give_the_same_id_for_the_same_pipeline(lib: Library) -> None:
    """One id function: a pipeline of the same stages on the host is the same tree in both formats."""
    stages = [{"name": "org.osbuild.test", "options": {"files": {"/a": "a"}}}, {"name": "org.osbuild.noop", "options": {}}]
    index = Index(str(lib.root))
    one = v1.load({"stages": stages}, index).get("tree")
    two = v2.load(v2_manifest(v2_pipeline("tree", *[{"type": s["name"], "options": s["options"]} for s in stages])),
                  index).get("tree")
    assert one is not None and two is not None
    assert [s.id for s in one.stages] == [s.id for s in two.stages]


def test_format_1_record_is_the_documented_one(lib: Library) -> None:
    """docs/ids.md's record, computed here from its table: format-1 ids stay what they were before format 2."""
    index = Index(str(lib.root))
    description = {"stages": [{"name": "org.osbuild.test", "options": {"files": {"/a": "a"}}}],
                   "assembler": {"name": "org.osbuild.test.asm", "options": {}}, "source-epoch": 5}
    manifest = v1.load(description, index)
    tree, assembler = manifest.get("tree"), manifest.get("assembler")
    assert tree is not None and assembler is not None
    runner = {"name": tree.runner.name, "implementation": tree.runner.digest}
    stage_record = {"kind": "stage", "type": "org.osbuild.test", "implementation": tree.stages[0].info.digest,
                    "library": library_digest(), "options": {"files": {"/a": "a"}}, "base": None, "build": None,
                    "runner": runner, "inputs": {}, "source-epoch": 5}
    assert tree.id == hashlib.sha256(canonical_json(stage_record)).hexdigest()
    assembler_record = dict(stage_record, kind="assembler", type="org.osbuild.test.asm",
                            implementation=assembler.stages[0].info.digest, options={}, inputs={"tree": tree.id})
    assert assembler.id == hashlib.sha256(canonical_json(assembler_record)).hexdigest()


def test_ids_are_the_same_from_inspect(lib: Library, tmp_path: Path) -> None:
    with_curl(lib)
    described = json.loads(lib.run("--inspect", manifest=base()).stdout)
    assert {p["name"]: p["id"] for p in described["pipelines"]} == ids(base(), lib)
