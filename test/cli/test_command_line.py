"""The command line as a user meets it: exit statuses, output formats, exports, and errors in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from testlib import (
    TEST_STAGE,
    Library,
    assert_one_line_error,
    kill_group,
    mounts_anywhere,
    objects_in,
    osbuild_argv,
    osbuild_env,
    stage_call,
    statuses,
    wait_for_line,
    wait_until_gone,
)

import osbuild


def two_stages() -> dict[str, Any]:
    return {"stages": [stage_call(files={"/etc/hostname": "box\n"}), stage_call(print=["hello from the stage"])],
            "assembler": {"name": "org.osbuild.test.asm", "options": {"random": {"disk.img": 1024}}}}


def inspect_ids(lib: Library, manifest: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(lib.run("--inspect", manifest=manifest).stdout)
    return result


# -- exit statuses -----------------------------------------------------------------------


def test_success_is_0(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), manifest=two_stages(), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_failing_stage_is_1_and_names_the_stage(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines = [f"output line {i:03}" for i in range(60)]
    manifest = {"stages": [stage_call(files={"/a": "a"}), stage_call(print=lines, exit=3)]}
    failing_id = inspect_ids(lib, manifest)["pipeline"]["stages"][1]["id"]
    proc = lib.run("--store", str(store), manifest=manifest, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    error = proc.stderr.splitlines()
    assert error[0].startswith("error: ")
    assert TEST_STAGE in error[0]
    assert failing_id in error[0]
    assert "exit status 3" in error[0]
    # The tail of its output, not all of it.
    assert "output line 059" in proc.stderr
    assert "output line 000" not in proc.stderr
    assert len(error) < 30
    # Nothing of the failed stage is kept; the stage before it is.
    assert len(objects_in(store)) == 1
    assert failing_id not in objects_in(store)
    assert sorted(p.name for p in (store / "tmp").iterdir()) == []


def test_stage_error_line_reaches_the_user(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.refuse", '''
def main(tree, options):
    raise osbuild.api.StageError("the disk is too small for 3 partitions")
''')
    proc = lib.run("--store", str(tmp_path / "store"), manifest={"stages": [{"name": "org.osbuild.test.refuse"}]}, check=False)
    assert proc.returncode == 1
    assert "exit status 1" in proc.stderr
    assert "error: the disk is too small for 3 partitions" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failure_with_json(lib: Library, tmp_path: Path) -> None:
    manifest = {"stages": [stage_call(files={"/a": "a"}), stage_call(print=["last words"], exit=7)]}
    result = lib.build_json(manifest, tmp_path / "store", check=False)
    assert result["success"] is False
    assert result["error"]["type"] == TEST_STAGE
    assert result["error"]["returncode"] == 7
    assert result["error"]["id"] == inspect_ids(lib, manifest)["tree_id"]
    assert "last words" in result["error"]["output"]
    assert statuses(result) == ["built"]


def test_invalid_manifest_is_2(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), manifest={"stages": [{"name": "org.osbuild.nope"}]}, check=False)
    assert_one_line_error(proc, 2, ".stages[0].name", "unknown stage")


def interrupt(lib: Library, tmp_path: Path, sig: int, whole_group: bool) -> subprocess.CompletedProcess[str]:
    store = tmp_path / "store"
    manifest = {"stages": [stage_call(files={"/a": "a"}), stage_call(say="sleeping in the stage", sleep=60, marker="int")]}
    proc = lib.popen("--store", str(store), manifest=manifest)
    try:
        wait_for_line(proc, "sleeping in the stage")
        if whole_group:
            os.killpg(proc.pid, sig)  # what a terminal's Ctrl-C does
        else:
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_group(proc)
        proc.wait()
    assert wait_until_gone(f"/run/osbuild/bin/{TEST_STAGE}") == [], "the stage outlived the interrupted build"
    assert mounts_anywhere(str(store)) == []
    assert len(objects_in(store)) == 1, "only the finished stage is kept"
    assert sorted(p.name for p in (store / "tmp").iterdir()) == [], "an interrupted build cleans up after itself"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("whole_group", [True, False], ids=["ctrl-c", "kill-engine"])
def test_sigint_is_130(lib: Library, tmp_path: Path, whole_group: bool) -> None:
    proc = interrupt(lib, tmp_path, signal.SIGINT, whole_group)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "interrupted" in proc.stderr


def test_sigint_reaches_an_engine_the_suite_started_from_the_background(lib: Library, tmp_path: Path) -> None:
    # `make check &` from a script, or nohup, hands the suite SIGINT ignored; popen() must not pass that on.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = interrupt(lib, tmp_path, signal.SIGINT, whole_group=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "interrupted" in proc.stderr


def test_sigterm_is_130(lib: Library, tmp_path: Path) -> None:
    proc = interrupt(lib, tmp_path, signal.SIGTERM, whole_group=False)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr


# -- output ------------------------------------------------------------------------------


def test_json_result(lib: Library, tmp_path: Path) -> None:
    manifest = two_stages()
    manifest["stages"][0]["options"]["metadata"] = {"packages": {"bash": "5.2"}}
    ids = inspect_ids(lib, manifest)
    result = lib.build_json(manifest, tmp_path / "store")
    assert result["type"] == "result"
    assert result["success"] is True
    assert result["tree_id"] == ids["tree_id"]
    assert result["output_id"] == ids["output_id"]
    assert set(result["pipelines"]) == {"tree", "assembler"}
    tree = result["pipelines"]["tree"]
    assert tree["id"] == ids["tree_id"]
    assert [s["id"] for s in tree["stages"]] == [s["id"] for s in ids["pipeline"]["stages"]]
    for stage in tree["stages"]:
        assert stage["type"] == TEST_STAGE
        assert stage["status"] == "built"
        assert isinstance(stage["duration"], (int, float)) and stage["duration"] >= 0
    assert result["pipelines"]["assembler"]["stages"][0]["type"] == "org.osbuild.test.asm"
    assert result["metadata"] == {"tree": {TEST_STAGE: {"packages": {"bash": "5.2"}}}}
    assert "error" not in result


def test_json_stdout_is_only_json(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--json", manifest=two_stages())
    result = json.loads(proc.stdout)  # the stage's own output must not be mixed in
    assert "hello from the stage" not in proc.stdout.splitlines()
    # It is in the result, as osbuild's log: what each stage printed, by pipeline.
    assert any("hello from the stage" in entry["output"] for entry in result["log"]["tree"])


def test_inspect_builds_nothing(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = json.loads(lib.run("--store", str(store), "--inspect", manifest=two_stages()).stdout)
    assert len(ids["tree_id"]) == 64
    assert not store.exists()
    # The ids are those a build then makes.
    assert lib.build_json(two_stages(), store)["tree_id"] == ids["tree_id"]


def test_log_monitor_shows_progress_and_stage_output(lib: Library, tmp_path: Path) -> None:
    out = lib.run("--store", str(tmp_path / "store"), manifest=two_stages()).stdout
    assert "    hello from the stage" in out.splitlines()
    done = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in done if " built " in line] == ["[1/3]", "[2/3]", "[3/3]"]
    again = lib.run("--store", str(tmp_path / "store"), manifest=two_stages()).stdout
    assert "hello from the stage" not in again
    assert again.count(" cached ") == 3


def test_jsonseq_monitor(lib: Library, tmp_path: Path) -> None:
    proc = subprocess.run([*lib_argv(lib), "--store", str(tmp_path / "store"), "--monitor", "jsonseq", "-"],
                          input=json.dumps(two_stages()).encode(), capture_output=True, cwd=REPO, env=osbuild_env(),
                          check=True, timeout=120)
    data = proc.stdout
    assert data.startswith(b"\x1e")
    records = []
    for chunk in data.split(b"\x1e")[1:]:
        assert chunk.endswith(b"\n"), chunk
        records.append(json.loads(chunk.decode("utf-8")))
    types = [r["type"] for r in records]
    assert "stage-start" in types and "stage-end" in types
    logs = [r for r in records if r["type"] == "log" and r.get("message") == "hello from the stage"]
    assert len(logs) == 1
    assert logs[0]["context"]["pipeline"]["stage"]["name"] == TEST_STAGE
    ends = [r for r in records if r["type"] == "stage-end"]
    assert len(ends) == 3
    assert all(r["result"]["success"] and r["result"]["status"] == "built" for r in ends)
    assert all(isinstance(r["timestamp"], (int, float)) for r in records)


def test_quiet_monitor_prints_nothing(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--monitor", "quiet", manifest=two_stages())
    assert proc.stdout == ""
    assert proc.stderr == ""


def lib_argv(lib: Library) -> list[str]:
    return osbuild_argv("--libdir", str(lib.root))


def test_version() -> None:
    proc = subprocess.run([*osbuild_argv(), "--version"], capture_output=True, text=True, cwd=REPO,
                          env=osbuild_env(), check=True)
    assert proc.stdout.strip() == f"osbuild {osbuild.__version__}"


def test_help() -> None:
    proc = subprocess.run([*osbuild_argv(), "--help"], capture_output=True, text=True, cwd=REPO,
                          env=osbuild_env(), check=True)
    for flag in ("--store", "--libdir", "--export", "--output-directory", "--json", "--inspect", "--monitor",
                 "--cache-max-size", "--checkpoint", "--build-pipeline"):
        assert flag in proc.stdout


def test_manifest_from_file_or_stdin(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(two_stages()))
    from_file = json.loads(lib.run("--store", str(tmp_path / "store"), "--json", str(path)).stdout)
    from_stdin = lib.build_json(two_stages(), tmp_path / "store")
    assert from_file["tree_id"] == from_stdin["tree_id"]
    assert statuses(from_stdin) == ["cached", "cached"]


# -- exports -----------------------------------------------------------------------------


def test_export_tree(lib: Library, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lib.run("--store", str(tmp_path / "store"), "--output-directory", str(out), "--export", "tree", manifest=two_stages())
    # Beside the export, the record of what it holds (see the next test).
    assert sorted(p.name for p in out.iterdir()) == [".tree.osbuild-export", "tree"]
    assert (out / "tree" / "etc" / "hostname").read_text() == "box\n"


def test_an_export_already_in_place_is_not_copied_again(lib: Library, tmp_path: Path) -> None:
    out, store = tmp_path / "out", tmp_path / "store"

    def export() -> int:
        lib.run("--store", str(store), "--output-directory", str(out), "--export", "tree", manifest=two_stages())
        return (out / "tree" / "etc" / "hostname").stat().st_ino

    first = export()
    assert export() == first
    # Touched since: the export copies the object again, and the output is the object's again.
    (out / "tree" / "etc" / "hostname").write_text("edited\n")
    assert export() != first
    assert (out / "tree" / "etc" / "hostname").read_text() == "box\n"
    (out / "tree" / "extra").write_text("x")
    export()
    assert not (out / "tree" / "extra").exists()


def test_default_export_is_the_last_pipeline(lib: Library, tmp_path: Path) -> None:
    with_assembler = tmp_path / "with"
    lib.run("--store", str(tmp_path / "store"), "--output-directory", str(with_assembler), manifest=two_stages())
    assert sorted(p.name for p in with_assembler.iterdir()) == [".assembler.osbuild-export", "assembler"]
    assert sorted(p.name for p in (with_assembler / "assembler").iterdir()) == ["disk.img", "listing.json"]
    without = tmp_path / "without"
    lib.run("--store", str(tmp_path / "store"), "--output-directory", str(without),
            manifest={"stages": two_stages()["stages"]})
    assert sorted(p.name for p in without.iterdir()) == [".tree.osbuild-export", "tree"]
    assert (without / "tree" / "etc" / "hostname").read_text() == "box\n"


def test_export_several_and_replace_what_was_there(lib: Library, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "tree").mkdir(parents=True)
    (out / "tree" / "stale").write_text("from an earlier export")
    result = lib.build_json(two_stages(), tmp_path / "store", "--output-directory", str(out),
                            "--export", "tree", "--export", "assembler")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["assembler", "tree"]
    assert not (out / "tree" / "stale").exists()
    assert (out / "assembler" / "disk.img").stat().st_size == 1024
    assert result["success"]


# -- bad input: exit 2, one line, no traceback -------------------------------------------


def test_invalid_json(lib: Library, tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"stages": [}')
    proc = lib.run("--store", str(tmp_path / "store"), str(path), check=False)
    assert_one_line_error(proc, 2, str(path), "invalid JSON", "line 1")


def test_missing_manifest_file(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), str(tmp_path / "nope.json"), check=False)
    assert_one_line_error(proc, 2, "nope.json", "no such file")


def test_manifest_is_a_directory(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), str(tmp_path), check=False)
    assert_one_line_error(proc, 2, str(tmp_path))


def test_no_manifest(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), check=False)
    assert_one_line_error(proc, 2, "manifest")


def test_missing_libdir(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--libdir", str(tmp_path / "nolib"), "--store", str(tmp_path / "store"), manifest=two_stages(), check=False)
    assert_one_line_error(proc, 2, str(tmp_path / "nolib"))


def test_unknown_export(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "image",
                   manifest=two_stages(), check=False)
    line = assert_one_line_error(proc, 2, "'image'")
    assert "tree" in line and "assembler" in line, "the error names the pipelines there are"
    assert not (tmp_path / "store").exists()


def test_export_without_output_directory(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--export", "tree", manifest=two_stages(), check=False)
    assert_one_line_error(proc, 2, "--output-directory")


def test_unknown_flag(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--frobnicate", manifest=two_stages(), check=False)
    assert_one_line_error(proc, 2, "--frobnicate")


def test_store_is_a_file(lib: Library, tmp_path: Path) -> None:
    (tmp_path / "store").write_text("")
    proc = lib.run("--store", str(tmp_path / "store"), manifest=two_stages(), check=False)
    assert_one_line_error(proc, 2, str(tmp_path / "store"), "not a directory")


def run_with_read_only(path: Path, lib: Library, setup: str, *args: str, manifest: Any) -> subprocess.CompletedProcess[str]:
    """Run osbuild in a private mount namespace where `setup` (a shell line, $1 = path) made path read-only."""
    script = setup + ' && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(path),
            *lib_argv(lib), *args, "-"]
    return subprocess.run(argv, input=json.dumps(manifest), capture_output=True, text=True, cwd=REPO, env=osbuild_env(),
                          check=False, timeout=120)


def test_store_on_a_read_only_filesystem(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    proc = run_with_read_only(store, lib, 'mount -t tmpfs -o ro,size=1m osbuild-test-ro "$1"',
                              "--store", str(store), manifest=two_stages())
    assert_one_line_error(proc, 2, str(store), "Read-only file system")


def test_existing_store_made_read_only(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lib.build_json(two_stages(), store)
    proc = run_with_read_only(store, lib, 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"',
                              "--store", str(store), manifest=two_stages())
    assert_one_line_error(proc, 2, str(store), "Read-only file system")


def test_store_of_another_layout_version(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lib.build_json(two_stages(), store)
    (store / "VERSION").write_text("99\n")
    proc = lib.run("--store", str(store), manifest=two_stages(), check=False)
    assert_one_line_error(proc, 2, str(store), "version 99")


def test_output_directory_on_a_read_only_filesystem(lib: Library, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = run_with_read_only(out, lib, 'mount -t tmpfs -o ro,size=1m osbuild-test-ro "$1"',
                              "--store", str(tmp_path / "store"), "--output-directory", str(out), manifest=two_stages())
    assert_one_line_error(proc, 2, str(out), "Read-only file system")
    assert not (tmp_path / "store" / "objects").exists() or objects_in(tmp_path / "store") == set(), \
        "the build ran although its result could not be exported"


def as_nobody(*args: str, manifest: Any) -> subprocess.CompletedProcess[str]:
    """Run the engine as user nobody, with the system's Python (root's may live where nobody cannot read)."""
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "/usr/bin/python3", "-m", "osbuild", "--libdir", str(REPO), *args, "-"]
    env = dict(osbuild_env(), HOME="/nonexistent", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(argv, input=json.dumps(manifest), capture_output=True, text=True, cwd="/", env=env,
                          check=False, timeout=120)


NOOP_MANIFEST = {"stages": [{"name": "org.osbuild.noop", "options": {"x": 1}}]}


def test_not_root(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = as_nobody("--store", str(store), manifest=NOOP_MANIFEST)
    assert_one_line_error(proc, 2, "root")
    assert not store.exists()


def test_python_without_jsonschema_gets_one_line() -> None:
    # A Python that cannot import jsonschema, as Debian's python3 is before `make deps`.
    code = "import runpy, sys; sys.modules['jsonschema'] = None; runpy.run_module('osbuild', run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code, "--inspect", "-"], input=json.dumps(NOOP_MANIFEST),
                          capture_output=True, text=True, cwd=REPO, env=osbuild_env(), check=False, timeout=60)
    assert_one_line_error(proc, 2, "jsonschema", "python3-jsonschema", "pip install jsonschema")


def test_inspect_does_not_need_root() -> None:
    proc = as_nobody("--inspect", manifest=NOOP_MANIFEST)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["tree_id"]) == 64
