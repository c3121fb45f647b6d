"""Format 2: what validates, what is refused (one line per problem, its JSON path), how it loads and is described."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from testlib import (
    TEST_STAGE,
    Library,
    inline_source,
    invalid_manifest_lines,
    pipeline_file_input,
    source_files_input,
    tree_input,
    v2_manifest,
    v2_pipeline,
    v2_stage,
)

from osbuild.formats import v2
from osbuild.meta import Index

DATA = b"a file the manifest carries\n"
CHECKSUM, INLINE = inline_source(DATA)
V2_STAGE = "org.osbuild.test.v2"


@pytest.fixture
def v2lib(lib: Library) -> Library:
    """The test library, with the real sources and a stage whose format-2 options differ from its format-1 ones."""
    lib.use_sources("org.osbuild.inline", "org.osbuild.curl", "org.osbuild.files")
    lib.stage(V2_STAGE, "def main(tree, options):\n    return 0\n",
              schema={"type": "object", "additionalProperties": False, "properties": {"old_name": {"type": "string"}}},
              schema_2={"options": {"type": "object", "additionalProperties": False,
                                    "properties": {"new-name": {"type": "string"}}},
                        "inputs": {"type": "object", "additionalProperties": False, "properties": {"tree": {"type": "object"}}}})
    return lib


def valid() -> dict[str, Any]:
    """A manifest with every part format 2 has (no devices: they make a manifest unbuildable here)."""
    return v2_manifest(
        v2_pipeline("build", v2_stage(files={"/usr/bin/tool": "#!/bin/sh\n"}), runner="org.osbuild.linux"),
        v2_pipeline("os", v2_stage(files={"/etc/hostname": "box\n"}), build="name:build", source_epoch=1700000000),
        v2_pipeline("image", v2_stage(inputs={"tree": tree_input("os"), "files": source_files_input(CHECKSUM),
                                              "one": pipeline_file_input("os", "/etc/hostname")}),
                    build="name:build"),
        sources=INLINE,
        metadata={"generators": [{"name": "a test", "version": "1"}]},
    )


def problems(lib: Library, manifest: Any, tmp_path: Path) -> list[str]:
    return invalid_manifest_lines(lib, manifest, tmp_path / "store")


def changed(path: list[Any], value: Any, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The valid manifest with the value at path set (or deleted, for value None)."""
    result = copy.deepcopy(manifest or valid())
    target = result
    for part in path[:-1]:
        target = target[part]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


def test_the_valid_manifest_is_valid(v2lib: Library) -> None:
    assert v2.validate(valid(), Index(str(v2lib.root))) == []


S0 = ["pipelines", 2, "stages", 0]
INPUTS = [*S0, "inputs"]


@pytest.mark.parametrize(("path", "value", "where", "words"), [
    (["pipeline"], {}, ".", "'pipeline' was unexpected"),
    (["pipelines", 0, "name"], None, ".pipelines[0]", "'name' is a required property"),
    (["pipelines", 1, "name"], "build", ".pipelines[1].name", "a pipeline named 'build' comes earlier"),
    (["pipelines", 2, "name"], "..", ".pipelines[2].name", "does not match"),
    (["pipelines", 2, "name"], "a/b", ".pipelines[2].name", "does not match"),
    (["pipelines", 2, "name"], "", ".pipelines[2].name", "does not match"),
    (["pipelines", 1, "build"], "build", ".pipelines[1].build", "does not match '^name:'"),
    (["pipelines", 1, "build"], "name:image", ".pipelines[1].build", "'name:image' names no earlier pipeline"),
    (["pipelines", 1, "build"], "name:os", ".pipelines[1].build", "'name:os' names no earlier pipeline"),
    (["pipelines", 0, "runner"], "fedora41", ".pipelines[0].runner", "'fedora41' does not match"),
    (["pipelines", 1, "source-epoch"], "now", ".pipelines[1].source-epoch", "'now' is not of type 'integer'"),
    (["pipelines", 1, "stages", 0, "type"], "org.osbuild.nope", ".pipelines[1].stages[0].type",
     "unknown stage 'org.osbuild.nope'"),
    (["pipelines", 1, "stages", 0, "name"], TEST_STAGE, ".pipelines[1].stages[0]", "'name' was unexpected"),
    (["pipelines", 1, "stages", 0, "options", "bogus"], 1, ".pipelines[1].stages[0].options", "'bogus' was unexpected"),
    (["pipelines", 1, "stages", 0, "options", "sleep"], "x", ".pipelines[1].stages[0].options.sleep", "not of type 'number'"),
    ([*INPUTS, "tree", "type"], "org.osbuild.nope", ".pipelines[2].stages[0].inputs.tree.type",
     "unknown input 'org.osbuild.nope'"),
    ([*INPUTS, "tree", "references"], ["name:later"], ".pipelines[2].stages[0].inputs.tree.references[0]",
     "'name:later' names no earlier pipeline"),
    ([*INPUTS, "tree", "references"], ["name:os", "name:build"], ".pipelines[2].stages[0].inputs.tree.references", ""),
    ([*INPUTS, "tree", "references"], ["os"], ".pipelines[2].stages[0].inputs.tree.references[0]", "not a pipeline reference"),
    ([*INPUTS, "files", "references"], ["sha256:" + "0" * 64], ".pipelines[2].stages[0].inputs.files.references[0]",
     "is not among the manifest's sources"),
    ([*INPUTS, "files", "references"], ["../../etc/passwd"], ".pipelines[2].stages[0].inputs.files", "does not match"),
    ([*INPUTS, "files", "references"], {CHECKSUM: {"metadata": {"rpm.check_gpg": True}, "bogus": 1}},
     ".pipelines[2].stages[0].inputs.files", ""),
    ([*INPUTS, "one", "references"], {"name:os": {}}, ".pipelines[2].stages[0].inputs.one", ""),
    ([*INPUTS, "one", "references"], {"name:nope": {"file": "/etc/hostname"}},
     ".pipelines[2].stages[0].inputs.one.references.name:nope", "'name:nope' names no earlier pipeline"),
    ([*INPUTS, "../up"], tree_input("os"), ".pipelines[2].stages[0].inputs", "does not match"),
    ([*S0, "devices"], {"disk": {"type": "org.osbuild.nope"}}, ".pipelines[2].stages[0].devices.disk.type",
     "unknown device 'org.osbuild.nope'"),
    ([*S0, "devices"], {"disk": {"type": "org.osbuild.loopback", "options": {"file": "x"}}},
     ".pipelines[2].stages[0].devices.disk.options", ""),
    ([*S0, "devices"], {"part": {"type": "org.osbuild.loopback", "parent": "disk", "options": {"filename": "x"}}},
     ".pipelines[2].stages[0].devices.part.parent", "no other device of this stage is named 'disk'"),
    ([*S0, "mounts"], [{"name": "root", "type": "org.osbuild.ext4", "source": "disk", "target": "/"}],
     ".pipelines[2].stages[0].mounts[0].source", "no device of this stage is named 'disk'"),
    ([*S0, "mounts"], [{"name": "root", "type": "org.osbuild.zfs", "source": "disk", "target": "/"}],
     ".pipelines[2].stages[0].mounts[0].type", "unknown mount 'org.osbuild.zfs'"),
    (["sources", "org.osbuild.nope"], {"items": {}}, ".sources.org.osbuild.nope", "unknown source 'org.osbuild.nope'"),
    (["sources", "org.osbuild.inline", "items", CHECKSUM, "encoding"], "rot13",
     f".sources.org.osbuild.inline.items.{CHECKSUM}.encoding", "'rot13' is not one of"),
    (["sources", "org.osbuild.curl"], {"items": {"sha256:abc": "http://example.org/x"}},
     ".sources.org.osbuild.curl.items", "does not match"),
    (["metadata", "bogus"], 1, ".metadata", "'bogus' was unexpected"),
])
def test_problem_names_its_path(v2lib: Library, tmp_path: Path, path: list[Any], value: Any, where: str, words: str) -> None:
    lines = problems(v2lib, changed(path, value), tmp_path)
    assert any(line.startswith(f"{where}: ") and words in line for line in lines), \
        f"no line for {where} saying {words!r} in:\n" + "\n".join(lines)


def test_every_problem_is_one_line_and_json_gives_osbuilds_document(v2lib: Library, tmp_path: Path) -> None:
    manifest = changed(["pipelines", 1, "stages", 0, "type"], "org.osbuild.nope",
                       changed(["pipelines", 2, "build"], "name:nowhere"))
    lines = problems(v2lib, manifest, tmp_path)
    assert lines == [".pipelines[1].stages[0].type: unknown stage 'org.osbuild.nope'",
                     ".pipelines[2].build: 'name:nowhere' names no earlier pipeline (a pipeline can use only those before it)"]
    proc = v2lib.run("--store", str(tmp_path / "store"), "--json", manifest=manifest, check=False)
    assert proc.returncode == 2
    document = json.loads(proc.stdout)
    assert document["type"] == "https://osbuild.org/validation-error"
    assert document["success"] is False
    assert [(e["path"], e["message"]) for e in document["errors"]] == [
        (["pipelines", 1, "stages", 0, "type"], "unknown stage 'org.osbuild.nope'"),
        (["pipelines", 2, "build"], "'name:nowhere' names no earlier pipeline (a pipeline can use only those before it)"),
    ]


def test_format_2_options_come_from_schema_2_when_the_stage_has_one(v2lib: Library, tmp_path: Path) -> None:
    index = Index(str(v2lib.root))
    new = v2_manifest(v2_pipeline("os", {"type": V2_STAGE, "options": {"new-name": "x"}}))
    assert v2.validate(new, index) == []
    old = v2_manifest(v2_pipeline("os", {"type": V2_STAGE, "options": {"old_name": "x"}}))
    assert [str(p) for p in v2.validate(old, index)] == [".pipelines[0].stages[0].options: Additional properties are not "
                                                         "allowed ('old_name' was unexpected)"]
    # The stage's schema_2.inputs says which inputs it takes.
    extra = v2_manifest(v2_pipeline("a"), v2_pipeline("os", {"type": V2_STAGE, "inputs": {"other": tree_input("a")}}))
    assert [p.where for p in v2.validate(extra, index)] == [".pipelines[1].stages[0].inputs"]
    # Format 1 still reads the format-1 schema.
    assert invalid_manifest_lines(v2lib, {"stages": [{"name": V2_STAGE, "options": {"new-name": "x"}}]}, tmp_path / "s") == \
        [".stages[0].options: Additional properties are not allowed ('new-name' was unexpected)"]


def test_a_format_1_assembler_serves_as_the_only_stage_of_a_pipeline(v2lib: Library) -> None:
    index = Index(str(v2lib.root))
    assembler = {"type": "org.osbuild.test.asm", "inputs": {"tree": tree_input("os")}}
    good = v2_manifest(v2_pipeline("os", v2_stage()), v2_pipeline("image", assembler))
    assert v2.validate(good, index) == []
    manifest = v2.load(good, index)
    image = manifest.get("image")
    assert image is not None and image.produces_output
    crowded = v2_manifest(v2_pipeline("os", v2_stage()), v2_pipeline("image", v2_stage(), assembler))
    assert [p.where for p in v2.validate(crowded, index)] == [".pipelines[1].stages[1].type"]
    no_tree = v2_manifest(v2_pipeline("os", v2_stage()), v2_pipeline("image", {"type": "org.osbuild.test.asm"}))
    assert [p.where for p in v2.validate(no_tree, index)] == [".pipelines[1].stages[0].inputs"]


def test_load_builds_the_model(v2lib: Library) -> None:
    manifest = v2.load(valid(), Index(str(v2lib.root)))
    assert [p.name for p in manifest.pipelines] == ["build", "os", "image"]
    build, os_, image = manifest.pipelines
    assert os_.build is build and image.build is build and build.build is None
    # A pipeline runs with the runner its build pipeline names; the build pipeline itself with the host's.
    assert os_.runner.name == "org.osbuild.linux"
    assert build.runner is manifest.host_runner
    assert os_.source_epoch == 1700000000
    stage = image.stages[0]
    assert sorted(stage.inputs) == ["files", "one", "tree"]
    assert stage.inputs["tree"].pipelines == [os_]
    assert [r.checksum for r in stage.inputs["files"].references] == [CHECKSUM]
    assert stage.inputs["one"].references[0].options == {"file": "/etc/hostname"}
    assert manifest.sources["org.osbuild.inline"].items[CHECKSUM]["encoding"] == "base64"


def test_the_three_forms_of_references_are_one(v2lib: Library) -> None:
    index = Index(str(v2lib.root))
    forms = [
        ["name:os"],
        [{"id": "name:os"}],
        [{"id": "name:os", "options": {}}],
        {"name:os": {}},
    ]
    ids = set()
    for references in forms:
        manifest = changed([*INPUTS, "tree", "references"], references)
        assert v2.validate(manifest, index) == [], references
        ids.add(v2.load(manifest, index).pipelines[-1].id)
    assert len(ids) == 1
    files = [[CHECKSUM], [{"id": CHECKSUM}], {CHECKSUM: {}}]
    file_ids = {v2.load(changed([*INPUTS, "files", "references"], refs), index).pipelines[-1].id for refs in files}
    assert len(file_ids) == 1


def test_inspect_prints_the_manifest_in_format_2_with_every_id(v2lib: Library) -> None:
    described = json.loads(v2lib.run("--inspect", manifest=valid()).stdout)
    manifest = v2.load(valid(), Index(str(v2lib.root)))
    assert described["version"] == "2"
    assert [p["name"] for p in described["pipelines"]] == ["build", "os", "image"]
    assert [p["id"] for p in described["pipelines"]] == [p.id for p in manifest.pipelines]
    assert described["pipelines"][0]["runner"] == "org.osbuild.linux"
    assert described["pipelines"][1]["build"] == "name:build"
    image = described["pipelines"][2]["stages"][0]
    assert image["id"] == manifest.pipelines[2].stages[0].id
    assert image["inputs"]["tree"]["references"] == {"name:os": {}}
    assert image["inputs"]["one"]["references"] == {"name:os": {"file": "/etc/hostname"}}
    assert set(described["sources"]["org.osbuild.inline"]["items"]) == {CHECKSUM}
    assert "tree_id" not in described


def test_described_manifest_loads_to_the_same_ids(v2lib: Library) -> None:
    index = Index(str(v2lib.root))
    manifest = v2.load(valid(), index)
    again = v2.describe(manifest)
    assert v2.validate(again, index) == []
    assert [s.id for _, s in v2.load(again, index).stages()] == [s.id for _, s in manifest.stages()]


def test_build_pipeline_flag_is_for_format_1(v2lib: Library, tmp_path: Path) -> None:
    build = tmp_path / "build.json"
    build.write_text(json.dumps({"stages": []}))
    lines = invalid_manifest_lines(v2lib, valid(), tmp_path / "store", "--build-pipeline", str(build))
    assert lines == [".: --build-pipeline is for format 1; a format-2 manifest names its build pipelines"]


@pytest.mark.parametrize(("declared", "used"), [
    ("org.osbuild.linux", "org.osbuild.linux"),
    ("org.osbuild.debian13", "org.osbuild.debian13"),
    ("org.osbuild.debian14", "org.osbuild.debian13"),   # the same distribution's closest older runner, as osbuild picks
    ("org.osbuild.debian12", "org.osbuild.debian12"),
    ("org.osbuild.debian11", "org.osbuild.linux"),      # none old enough: the generic one
    ("org.osbuild.fedora41", "org.osbuild.fedora30"),
    ("org.osbuild.rhel9", "org.osbuild.linux"),
])
def test_a_runner_this_library_lacks_runs_with_the_closest(declared: str, used: str) -> None:
    manifest = v2_manifest(v2_pipeline("build", runner=declared), v2_pipeline("os", build="name:build"))
    index = Index(str(REPO))
    assert v2.validate(manifest, index) == []
    loaded = v2.load(manifest, index)
    os_pipeline = loaded.get("os")
    assert os_pipeline is not None and os_pipeline.runner.name == used
    assert v2.describe(loaded)["pipelines"][0]["runner"] == declared
