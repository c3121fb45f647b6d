"""Ids: the same inputs always give the same id; anything that decides a tree changes it; nothing else does."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from conftest import REPO, run_osbuild
from testlib import TEST_STAGE, Library

from osbuild.formats import v1
from osbuild.meta import Index

BASE: dict[str, Any] = {
    "build": {"stages": [{"name": "org.osbuild.noop", "options": {"tools": ["python3"]}}]},
    "stages": [
        {"name": "org.osbuild.noop", "options": {"first": 1}},
        {"name": "org.osbuild.noop", "options": {"second": {"x": 1, "y": [1, 2]}}},
        {"name": "org.osbuild.noop", "options": {"third": "c"}},
    ],
    "assembler": {"name": "org.osbuild.noop", "options": {"format": "tar"}},
}


def ids(description: Any, libdir: Path = REPO, build: Any = None) -> dict[str, list[str]]:
    """Stage ids of each pipeline, by pipeline name."""
    index = Index(str(libdir))
    assert v1.validate(description, index, build) == []
    manifest = v1.load(description, index, build)
    return {p.name: [s.id for s in p.stages] for p in manifest.pipelines}


def changed(description: dict[str, Any]) -> dict[str, Any]:
    """A copy to change."""
    return copy.deepcopy(description)


def test_ids_are_the_same_in_another_process(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(BASE))
    first = run_osbuild("--inspect", str(manifest)).stdout
    second = run_osbuild("--inspect", str(manifest)).stdout
    assert first == second
    assert json.loads(first)["tree_id"] == ids(BASE)["tree"][-1]


def test_ids_are_distinct() -> None:
    all_ids = [i for stage_ids in ids(BASE).values() for i in stage_ids]
    assert len(all_ids) == 5
    assert len(set(all_ids)) == 5


def test_same_stage_in_build_and_tree_pipelines_differs() -> None:
    stage = {"name": "org.osbuild.noop", "options": {"same": True}}
    pipelines = ids({"build": {"stages": [stage]}, "stages": [stage]})
    assert pipelines["build"] != pipelines["tree"]


def test_changing_options_changes_that_stage_and_every_later_one() -> None:
    before = ids(BASE)
    description = changed(BASE)
    description["stages"][1]["options"]["second"]["y"] = [2, 1]
    after = ids(description)
    assert after["build"] == before["build"]
    assert after["tree"][0] == before["tree"][0]
    assert after["tree"][1] != before["tree"][1]
    # Stage 3's own options are the same: its id changes only because its base did.
    assert after["tree"][2] != before["tree"][2]
    assert after["assembler"] != before["assembler"]


def test_key_order_in_options_does_not_matter() -> None:
    description = changed(BASE)
    description["stages"][1]["options"] = {"second": {"y": [1, 2], "x": 1}}
    reordered = json.loads(json.dumps(description, sort_keys=True))
    assert ids(description) == ids(BASE)
    assert ids(reordered) == ids(BASE)


def test_changing_the_build_pipeline_changes_every_tree_id() -> None:
    before = ids(BASE)
    description = changed(BASE)
    description["build"]["stages"][0]["options"]["tools"].append("mkfs")
    after = ids(description)
    assert after["build"] != before["build"]
    assert not set(after["tree"]) & set(before["tree"])
    assert after["assembler"] != before["assembler"]


def test_changing_the_runner_changes_every_tree_id() -> None:
    generic = changed(BASE)
    generic["build"] = {"pipeline": BASE["build"], "runner": "org.osbuild.linux"}
    other = changed(BASE)
    other["build"] = {"pipeline": BASE["build"], "runner": "org.osbuild.fedora30"}
    assert ids(generic) == ids(BASE)
    with_other = ids(other)
    assert with_other["build"] == ids(BASE)["build"]
    assert not set(with_other["tree"]) & set(ids(BASE)["tree"])


def test_changing_the_source_epoch_changes_ids() -> None:
    description = changed(BASE)
    description["source-epoch"] = 1
    later = changed(BASE)
    later["source-epoch"] = 2
    assert ids(description)["tree"] != ids(BASE)["tree"]
    assert ids(description)["tree"] != ids(later)["tree"]
    # The source epoch is the tree pipeline's own; the build pipeline keeps its ids.
    assert ids(description)["build"] == ids(BASE)["build"]


def test_changing_the_assembler_leaves_tree_ids_alone() -> None:
    description = changed(BASE)
    description["assembler"]["options"]["format"] = "qcow2"
    before, after = ids(BASE), ids(description)
    assert after["tree"] == before["tree"]
    assert after["assembler"] != before["assembler"]


def test_appending_a_stage_leaves_earlier_ids_alone() -> None:
    description = changed(BASE)
    description["stages"].append({"name": "org.osbuild.noop", "options": {"fourth": 4}})
    before, after = ids(BASE), ids(description)
    assert after["tree"][:3] == before["tree"]
    assert after["assembler"] != before["assembler"]


def test_manifest_name_and_formatting_leave_ids_alone(tmp_path: Path) -> None:
    named = changed(BASE)
    named["name"] = "something else"
    assert ids(named) == ids(BASE)
    compact, pretty = tmp_path / "compact.json", tmp_path / "pretty.json"
    compact.write_text(json.dumps(BASE, separators=(",", ":")))
    pretty.write_text(json.dumps(BASE, indent=8) + "\n\n")
    tree_ids = [json.loads(run_osbuild("--inspect", str(p)).stdout)["tree_id"] for p in (compact, pretty)]
    assert tree_ids[0] == tree_ids[1] == ids(BASE)["tree"][-1]


# -- the implementation of modules is part of the id -----------------------------------


def lib_manifest() -> dict[str, Any]:
    return {
        "stages": [
            {"name": "org.osbuild.noop", "options": {"n": 1}},
            {"name": TEST_STAGE, "options": {"marker": "m"}},
        ],
        "assembler": {"name": "org.osbuild.noop"},
    }


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_changing_a_stage_program_changes_its_ids(lib: Library) -> None:
    before = ids(lib_manifest(), lib.root)
    append(lib.root / "stages" / TEST_STAGE, "# a new line in the program\n")
    after = ids(lib_manifest(), lib.root)
    assert after["tree"][0] == before["tree"][0]
    assert after["tree"][1] != before["tree"][1]
    assert after["assembler"] != before["assembler"]


def test_changing_a_stage_meta_file_changes_its_ids(lib: Library) -> None:
    before = ids(lib_manifest(), lib.root)
    meta_path = lib.root / "stages" / f"{TEST_STAGE}.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["description"].append("A reworded description is a new implementation.")
    meta_path.write_text(json.dumps(meta))
    after = ids(lib_manifest(), lib.root)
    assert after["tree"][0] == before["tree"][0]
    assert after["tree"][1] != before["tree"][1]


def test_changing_the_first_stage_program_changes_every_later_id(lib: Library) -> None:
    before = ids(lib_manifest(), lib.root)
    append(lib.root / "stages" / "org.osbuild.noop", "# changed\n")
    after = ids(lib_manifest(), lib.root)
    assert not set(after["tree"]) & set(before["tree"])


def test_changing_the_runner_program_changes_ids(lib: Library) -> None:
    before = ids(lib_manifest(), lib.root)
    append(lib.root / "runners" / "org.osbuild.linux", "# changed\n")
    after = ids(lib_manifest(), lib.root)
    assert not set(after["tree"]) & set(before["tree"])


def test_changing_an_unused_module_leaves_ids_alone(lib: Library) -> None:
    before = ids(lib_manifest(), lib.root)
    lib.stage("org.osbuild.unused", "def main(tree, options):\n    return 0\n")
    append(lib.root / "assemblers" / "org.osbuild.test.asm", "# changed, and not used here\n")
    assert ids(lib_manifest(), lib.root) == before
