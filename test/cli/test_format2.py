"""The command line on format-2 manifests: --json in osbuild's shape, --monitor jsonseq context, --checkpoint, failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import REPO, run_osbuild
from testlib import (
    TEST_STAGE,
    Library,
    assert_one_line_error,
    osbuild_argv,
    osbuild_env,
    tree_input,
    v2_manifest,
    v2_pipeline,
    v2_stage,
)

from osbuild.formats import v2
from osbuild.main_cli import checkpoint_ids
from osbuild.meta import Index


def manifest() -> dict[str, Any]:
    return v2_manifest(
        v2_pipeline("os", v2_stage(files={"/etc/hostname": "box\n"}, metadata={"packages": ["bash"]}),
                    v2_stage(print=["hello from os"])),
        v2_pipeline("image", v2_stage(inputs={"tree": tree_input("os")}, files={"/image": "x"})),
    )


def test_json_result_has_osbuilds_shape_and_ours(lib: Library, tmp_path: Path) -> None:
    result = lib.build_json(manifest(), tmp_path / "store", "--output-directory", str(tmp_path / "out"), "--export", "image")
    assert result["type"] == "result" and result["success"] is True
    assert result["metadata"] == {"os": {TEST_STAGE: {"packages": ["bash"]}}}
    assert list(result["log"]) == ["os", "image"]
    assert [entry["type"] for entry in result["log"]["os"]] == [TEST_STAGE, TEST_STAGE]
    assert "hello from os" in result["log"]["os"][1]["output"]
    ids = json.loads(lib.run("--inspect", manifest=manifest()).stdout)
    assert [e["id"] for e in result["log"]["os"]] == [s["id"] for s in ids["pipelines"][0]["stages"]]
    # Ours, under keys osbuild does not use.
    assert [s["status"] for s in result["pipelines"]["os"]["stages"]] == ["built", "built"]
    assert all(s["changes"] is not None and s["duration"] >= 0 for p in result["pipelines"].values() for s in p["stages"])
    assert result["exports"] == {"image": str(tmp_path / "out/image")}
    assert "tree_id" not in result and "output_id" not in result


def test_jsonseq_records_carry_osbuilds_context_and_progress(lib: Library, tmp_path: Path) -> None:
    proc = subprocess.run([*osbuild_argv("--libdir", str(lib.root)), "--store", str(tmp_path / "store"), "--monitor", "jsonseq",
                           "--output-directory", str(tmp_path / "out"), "--export", "image", "-"],
                          input=json.dumps(manifest()).encode(), capture_output=True, cwd=REPO, env=osbuild_env(),
                          check=True, timeout=120)
    records = [json.loads(chunk) for chunk in proc.stdout.split(b"\x1e")[1:]]
    loaded = v2.load(manifest(), Index(str(lib.root)))
    os_pipeline, image = loaded.pipelines
    said = [r for r in records if r.get("message") == "hello from os"]
    assert len(said) == 1
    context = said[0]["context"]
    assert context["origin"] == "org.osbuild"
    assert context["pipeline"]["name"] == "os" and context["pipeline"]["id"] == os_pipeline.id
    assert context["pipeline"]["stage"] == {"name": TEST_STAGE, "id": os_pipeline.stages[1].id}
    assert said[0]["progress"] == {"name": "pipelines/sources", "total": 2, "done": 0,
                                   "progress": {"name": "pipeline: os", "total": 2, "done": 1}}
    ends = [r for r in records if r["type"] == "stage-end"]
    assert [(r["context"]["pipeline"]["name"], r["result"]["id"]) for r in ends] == \
        [("os", os_pipeline.stages[0].id), ("os", os_pipeline.stages[1].id), ("image", image.stages[0].id)]
    assert all(r["result"]["success"] and r["context"]["origin"] == "osbuild.monitor" for r in ends)
    assert ends[1]["result"]["output"] == "hello from os", "a stage's result carries its output, as osbuild's does"
    assert ends[-1]["progress"] == {"name": "pipelines/sources", "total": 2, "done": 1,
                                    "progress": {"name": "pipeline: image", "total": 1, "done": 1}}


def test_a_failing_stage_names_its_pipeline_stage_and_id(lib: Library, tmp_path: Path) -> None:
    failing = manifest()
    failing["pipelines"][1]["stages"][0]["options"] = {"print": ["about to fail"], "exit": 7}
    stage_id = v2.load(failing, Index(str(lib.root))).pipelines[1].stages[0].id
    proc = lib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                   manifest=failing, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error: stage {TEST_STAGE} in pipeline image failed (id {stage_id}, exit status 7)" in proc.stderr
    assert "about to fail" in proc.stderr
    assert not (tmp_path / "out/image").exists()
    result = lib.build_json(failing, tmp_path / "store", "--output-directory", str(tmp_path / "out"), "--export", "image",
                            check=False)
    assert result["success"] is False
    assert result["error"]["id"] == stage_id
    assert result["error"]["details"]["stage"] == {"id": stage_id, "type": TEST_STAGE, "output": "about to fail"}
    # As in osbuild's result, the failed stage's output is the last entry of its pipeline's log.
    assert result["log"]["image"][-1] == {"id": stage_id, "type": TEST_STAGE, "output": "about to fail"}


def test_export_of_an_unknown_pipeline_names_those_there_are(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "disk",
                   manifest=manifest(), check=False)
    assert_one_line_error(proc, 2, "--export 'disk': no such pipeline", "os, image")


def test_checkpoint_takes_pipeline_names_stage_ids_and_globs(lib: Library, tmp_path: Path) -> None:
    loaded = v2.load(manifest(), Index(str(lib.root)))
    os_pipeline, image = loaded.pipelines
    os_ids = {s.id for s in os_pipeline.stages}
    assert checkpoint_ids(loaded, ["os"]) == os_ids
    assert checkpoint_ids(loaded, ["o?"]) == os_ids
    assert checkpoint_ids(loaded, ["*"]) == os_ids | {image.stages[0].id}
    assert checkpoint_ids(loaded, [image.stages[0].id]) == {image.stages[0].id}
    assert checkpoint_ids(loaded, [image.stages[0].id[:10] + "*"]) == {image.stages[0].id}
    assert checkpoint_ids(loaded, [TEST_STAGE]) == os_ids | {image.stages[0].id}
    proc = lib.run("--store", str(tmp_path / "store"), "--checkpoint", "dis*", manifest=manifest(), check=False)
    assert_one_line_error(proc, 2, "--checkpoint 'dis*': no pipeline, stage type or id matches")


def test_the_same_stages_in_either_format_are_the_same_objects(tmp_path: Path) -> None:
    """The project's own stages run from format 2, and what format 1 built is reused: one model, one id function."""
    stages = [("org.osbuild.hostname", {"hostname": "either"}), ("org.osbuild.mkdir", {"paths": [{"path": "/srv"}]})]
    store = tmp_path / "store"
    one = run_osbuild("--store", str(store), "--json", manifest={"stages": [{"name": n, "options": o} for n, o in stages]})
    first = json.loads(one.stdout)
    two = run_osbuild("--store", str(store), "--json", "--output-directory", str(tmp_path / "out"), "--export", "tree",
                      manifest=v2_manifest(v2_pipeline("tree", *[{"type": n, "options": o} for n, o in stages])))
    second = json.loads(two.stdout)
    assert [s["status"] for s in second["pipelines"]["tree"]["stages"]] == ["cached", "cached"]
    assert second["pipelines"]["tree"]["id"] == first["tree_id"]
    assert (tmp_path / "out/tree/etc/hostname").read_text() == "either\n"
    assert (tmp_path / "out/tree/srv").is_dir()
