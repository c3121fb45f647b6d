"""An invalid manifest: exit 2, one line per problem naming its JSON path, nothing built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testlib import TEST_STAGE, Library, invalid_manifest_lines

NOOP = {"name": "org.osbuild.noop"}


def problems(lib: Library, manifest: Any, store: Path, *args: str) -> list[str]:
    return invalid_manifest_lines(lib, manifest, store, *args)


@pytest.mark.parametrize(("manifest", "path", "words"), [
    ({"stages": [NOOP, {"name": "org.osbuild.nope"}]}, ".stages[1].name", "unknown stage 'org.osbuild.nope'"),
    ({"stages": [NOOP, {"name": TEST_STAGE, "options": {"bogus": 1}}]}, ".stages[1].options", "'bogus' was unexpected"),
    ({"stages": [NOOP, {"name": TEST_STAGE, "options": {"sleep": "long"}}]}, ".stages[1].options.sleep",
     "'long' is not of type 'number'"),
    ({"stages": [NOOP, {"name": TEST_STAGE, "options": {"exit": 256}}]}, ".stages[1].options.exit",
     "256 is greater than the maximum of 255"),
    ({"stages": [NOOP, {"name": TEST_STAGE, "options": {"files": {"/a": 1}}}]}, ".stages[1].options.files./a",
     "1 is not of type 'string'"),
    ({"stages": [NOOP, {"name": "org.osbuild.noop", "options": []}]}, ".stages[1].options", "[] is not of type 'object'"),
    ({"stages": [NOOP, {"options": {}}]}, ".stages[1]", "'name' is a required property"),
    ({"stages": [NOOP, {"name": "org.osbuild.noop", "option": {}}]}, ".stages[1]", "'option' was unexpected"),
    ({"stages": NOOP}, ".stages", "is not of type 'array'"),
    ({"stagez": []}, ".", "'stagez' was unexpected"),
    ({"stages": [], "assembler": {"name": "org.osbuild.nope"}}, ".assembler.name", "unknown assembler 'org.osbuild.nope'"),
    ({"stages": [{"name": "org.osbuild.test.asm"}]}, ".stages[0].name",
     "unknown stage 'org.osbuild.test.asm' (it is an assembler)"),
    ({"stages": [], "assembler": {"name": "org.osbuild.test.asm", "options": {"sleep": -1}}}, ".assembler.options.sleep",
     "-1 is less than the minimum of 0"),
    ({"stages": [], "source-epoch": "yesterday"}, ".source-epoch", "is not of type 'integer'"),
    ({"build": {"stages": [{"name": "org.osbuild.nope"}]}, "stages": []}, ".build.stages[0].name", "unknown stage"),
    ({"build": [], "stages": []}, ".build", "[] is not of type 'object'"),
    ({"build": {"pipeline": {"stages": []}}, "stages": []}, ".build", "'runner' is a required property"),
    ({"build": {"pipeline": {"stages": []}, "runner": "org.osbuild.nope"}, "stages": []}, ".build.runner",
     "unknown runner 'org.osbuild.nope'"),
    ({"build": {"pipeline": {"stages": [{"name": TEST_STAGE, "options": {"x": 1}}]}, "runner": "org.osbuild.linux"},
      "stages": []}, ".build.pipeline.stages[0].options", "'x' was unexpected"),
    ({"pipeline": {"stages": [NOOP, {"name": TEST_STAGE, "options": {"say": 5}}]}}, ".pipeline.stages[1].options.say",
     "5 is not of type 'string'"),
    ({"pipeline": {"stages": []}, "sources": []}, ".sources", "[] is not of type 'object'"),
    ({"pipeline": {"stages": []}, "sources": {"org.osbuild.nope": {}}}, ".sources.org.osbuild.nope", "unknown source"),
    ({"pipeline": {"stages": []}, "extra": 1}, ".", "'extra' was unexpected"),
    ([], ".", "a manifest must be a JSON object"),
])
def test_problem_names_its_path(lib: Library, tmp_path: Path, manifest: Any, path: str, words: str) -> None:
    lines = problems(lib, manifest, tmp_path / "store")
    assert any(line.startswith(f"{path}: ") and words in line for line in lines), \
        f"no line for {path} saying {words!r} in:\n" + "\n".join(lines)


def test_every_problem_is_reported(lib: Library, tmp_path: Path) -> None:
    manifest = {
        "stages": [
            {"name": "org.osbuild.nope"},
            {"name": TEST_STAGE, "options": {"bogus": 1}},
            {"name": TEST_STAGE, "options": {"sleep": "x"}},
            {"name": "org.osbuild.noop", "options": 7},
        ],
        "assembler": {"name": "org.osbuild.missing"},
    }
    paths = sorted(line.split(": ")[0] for line in problems(lib, manifest, tmp_path / "store"))
    assert paths == [".assembler.name", ".stages[0].name", ".stages[1].options", ".stages[2].options.sleep", ".stages[3].options"]


def test_build_pipeline_file_problems_are_named_after_the_flag(lib: Library, tmp_path: Path) -> None:
    build = tmp_path / "build.json"
    build.write_text(json.dumps({"stages": [{"name": TEST_STAGE, "options": {"exit": "no"}}]}))
    lines = problems(lib, {"stages": [NOOP]}, tmp_path / "store", "--build-pipeline", str(build))
    assert lines == ["--build-pipeline.stages[0].options.exit: 'no' is not of type 'integer'"]


def test_build_pipeline_file_and_build_in_manifest_conflict(lib: Library, tmp_path: Path) -> None:
    build = tmp_path / "build.json"
    build.write_text(json.dumps({"stages": [NOOP]}))
    lines = problems(lib, {"build": {"stages": [NOOP]}, "stages": []}, tmp_path / "store", "--build-pipeline", str(build))
    assert len(lines) == 1
    assert lines[0].startswith(".build: ") and "--build-pipeline" in lines[0]


def test_nothing_runs_before_the_whole_manifest_is_valid(lib: Library, tmp_path: Path) -> None:
    # The first stage would fail the build; the invalid last stage must stop everything before it runs.
    manifest = {"stages": [{"name": TEST_STAGE, "options": {"exit": 1}}, {"name": "org.osbuild.nope"}]}
    assert problems(lib, manifest, tmp_path / "store") == [".stages[1].name: unknown stage 'org.osbuild.nope'"]


def test_unsupported_format_version(lib: Library, tmp_path: Path) -> None:
    lines = problems(lib, {"version": "3", "pipelines": []}, tmp_path / "store")
    assert len(lines) == 1
    assert "format version '3' is not supported" in lines[0]
