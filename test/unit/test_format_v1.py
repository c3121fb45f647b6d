"""Format 1: every shape of the manifest loads into the pipelines a user exports, and --inspect describes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_osbuild

from osbuild.formats import v1
from osbuild.meta import Index

NOOP_A = {"name": "org.osbuild.noop", "options": {"a": 1}}
NOOP_B = {"name": "org.osbuild.noop", "options": {"b": 2}}
BUILD_STAGE = {"name": "org.osbuild.noop", "options": {"build": True}}
ASSEMBLER = {"name": "org.osbuild.noop", "options": {"out": 1}}


def load(description: Any, build: Any = None) -> dict[str, Any]:
    """Each pipeline of a valid description: its runner and stage ids, by name."""
    index = Index(str(REPO))
    assert v1.validate(description, index, build) == []
    manifest = v1.load(description, index, build)
    return {p.name: {"runner": p.runner.name, "ids": [s.id for s in p.stages],
                     "build": p.build.name if p.build else None} for p in manifest.pipelines}


def inspect(manifest: Any, *args: str) -> dict[str, Any]:
    proc = run_osbuild("--inspect", *args, manifest=manifest)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_plain_pipeline_has_tree_and_assembler() -> None:
    pipelines = load({"stages": [NOOP_A, NOOP_B], "assembler": ASSEMBLER})
    assert list(pipelines) == ["tree", "assembler"]
    assert len(pipelines["tree"]["ids"]) == 2
    assert len(pipelines["assembler"]["ids"]) == 1
    assert pipelines["tree"]["build"] is None


def test_wrapped_pipeline_with_sources_is_the_same_manifest() -> None:
    plain = {"stages": [NOOP_A], "assembler": ASSEMBLER}
    assert load({"pipeline": plain, "sources": {}}) == load(plain)
    assert load({"pipeline": plain}) == load(plain)


def test_build_as_pipeline_is_built_first_and_named_build() -> None:
    pipelines = load({"build": {"stages": [BUILD_STAGE]}, "stages": [NOOP_A], "assembler": ASSEMBLER})
    assert list(pipelines) == ["build", "tree", "assembler"]
    assert pipelines["tree"]["build"] == "build"
    # A pipeline with a build root of its own runs with the generic runner.
    assert pipelines["tree"]["runner"] == "org.osbuild.linux"


def test_build_with_runner_names_the_runner() -> None:
    wrapped = load({"build": {"pipeline": {"stages": [BUILD_STAGE]}, "runner": "org.osbuild.fedora30"}, "stages": [NOOP_A]})
    assert wrapped["tree"]["runner"] == "org.osbuild.fedora30"
    assert wrapped["tree"]["build"] == "build"


def test_build_with_generic_runner_equals_build_as_pipeline() -> None:
    plain = load({"build": {"stages": [BUILD_STAGE]}, "stages": [NOOP_A]})
    wrapped = load({"build": {"pipeline": {"stages": [BUILD_STAGE]}, "runner": "org.osbuild.linux"}, "stages": [NOOP_A]})
    assert plain == wrapped


def test_nested_build_pipelines_are_named_by_depth() -> None:
    inner = {"stages": [{"name": "org.osbuild.noop", "options": {"inner": True}}]}
    pipelines = load({"build": {"build": inner, "stages": [BUILD_STAGE]}, "stages": [NOOP_A]})
    assert list(pipelines) == ["build.build", "build", "tree"]
    assert pipelines["build"]["build"] == "build.build"


def test_build_pipeline_file_equals_inline_build(tmp_path: Path) -> None:
    build_file = tmp_path / "build.json"
    build_file.write_text(json.dumps({"stages": [BUILD_STAGE]}))
    from_file = inspect({"stages": [NOOP_A], "assembler": ASSEMBLER}, "--build-pipeline", str(build_file))
    inline = inspect({"build": {"stages": [BUILD_STAGE]}, "stages": [NOOP_A], "assembler": ASSEMBLER})
    assert from_file == inline
    assert from_file["pipeline"]["build"]["pipeline"]["stages"][0]["options"] == {"build": True}


def test_build_pipeline_file_may_name_a_runner(tmp_path: Path) -> None:
    build_file = tmp_path / "build.json"
    build_file.write_text(json.dumps({"pipeline": {"stages": [BUILD_STAGE]}, "runner": "org.osbuild.fedora30"}))
    described = inspect({"stages": [NOOP_A]}, "--build-pipeline", str(build_file))
    assert described["pipeline"]["build"]["runner"] == "org.osbuild.fedora30"


def test_inspect_describes_every_stage_with_its_id() -> None:
    described = inspect({"pipeline": {"build": {"stages": [BUILD_STAGE]}, "stages": [NOOP_A, NOOP_B],
                                      "assembler": ASSEMBLER, "source-epoch": 1700000000}})
    pipeline = described["pipeline"]
    assert [s["options"] for s in pipeline["stages"]] == [{"a": 1}, {"b": 2}]
    assert pipeline["source-epoch"] == 1700000000
    assert pipeline["build"]["runner"] == "org.osbuild.linux"
    ids = [s["id"] for s in pipeline["stages"]]
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)
    assert described["tree_id"] == ids[-1]
    assert described["output_id"] == pipeline["assembler"]["id"]
    assert described["output_id"] not in ids


def test_manifest_without_assembler_has_no_output_id() -> None:
    described = inspect({"stages": [NOOP_A]})
    assert described["output_id"] is None
    assert described["tree_id"] == described["pipeline"]["stages"][0]["id"]


@pytest.mark.parametrize("description", [
    {},
    {"stages": []},
    {"pipeline": {}},
    {"name": "an old manifest with a name", "stages": [NOOP_A]},
])
def test_minimal_shapes_are_valid(description: dict[str, Any]) -> None:
    proc = run_osbuild("--inspect", manifest=description)
    assert "tree_id" in json.loads(proc.stdout)
