"""A build killed mid-stage or mid-export leaves no partial object, export or mount; the next run cleans up and succeeds."""

from __future__ import annotations

import os
import time
from pathlib import Path

from testlib import (
    TEST_STAGE,
    Library,
    kill_group,
    mounts_anywhere,
    objects_in,
    processes_running,
    stage_call,
    statuses,
    wait_for_line,
    wait_until_gone,
)

from osbuild.exports import process_start


def manifest(sleep: float) -> dict[str, object]:
    return {"stages": [stage_call(files={"/a": "first"}),
                       stage_call(random={"/b": 1 << 20}, say="second stage sleeping", sleep=sleep),
                       stage_call(files={"/c": "third"})]}


def test_sigkill_mid_stage_then_resume(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = lib.popen("--store", str(store), manifest=manifest(sleep=60))
    try:
        wait_for_line(proc, "second stage sleeping")
        stage_processes = processes_running(f"/run/osbuild/bin/{TEST_STAGE}")
        assert stage_processes, "the stage runs as a host process"
    finally:
        kill_group(proc)
        proc.wait()
    assert proc.returncode == -9

    # Nothing of the build lives on: not the sandboxed stage, not a mount in any namespace.
    assert wait_until_gone(f"/run/osbuild/bin/{TEST_STAGE}") == []
    assert mounts_anywhere(str(store)) == []
    # The first stage's object is whole; the killed one is absent, its work only debris in tmp/.
    objects = objects_in(store)
    assert len(objects) == 1
    assert sorted(p.name for p in (store / "objects").iterdir()) == sorted(objects)
    (first,) = objects
    assert (store / "objects" / first / "tree" / "a").read_text() == "first"
    debris = sorted(p.name for p in (store / "tmp").iterdir())
    assert debris, "a killed build leaves its workspace behind"

    result = lib.build_json(manifest(sleep=0), store)
    assert statuses(result) == ["cached", "built", "built"]
    assert sorted(p.name for p in (store / "tmp").iterdir()) == [], "the next run removes the debris"
    tree = lib.build_tree(manifest(sleep=0), store, tmp_path / "out")
    assert sorted(p.name for p in tree.iterdir()) == ["a", "b", "c"]
    assert (tree / "b").stat().st_size == 1 << 20


def test_debris_of_a_killed_build_does_not_disturb_a_running_one(lib: Library, tmp_path: Path) -> None:
    """A build opening the store removes dead builds' workspaces, never a live one's."""
    store = tmp_path / "store"
    live = lib.popen("--store", str(store), manifest={"stages": [stage_call(say="live build", sleep=4, marker="live")]})
    try:
        wait_for_line(live, "live build")
        dead = lib.popen("--store", str(store), manifest=manifest(sleep=60))
        try:
            wait_for_line(dead, "second stage sleeping")
        finally:
            kill_group(dead)
            dead.wait()
        assert len([p for p in (store / "tmp").glob("ws-*") if p.is_dir()]) == 2
        lib.build_json({"stages": [stage_call(marker="third")]}, store)
        remaining = [p for p in (store / "tmp").glob("ws-*") if p.is_dir()]
        assert len(remaining) == 1, "the dead workspace is removed"
        assert list(remaining[0].glob("stage-*/layer/upper")), "the live build's work is untouched"
        assert live.wait(timeout=60) == 0
    finally:
        kill_group(live)
        live.wait()
    assert sorted(p.name for p in (store / "tmp").iterdir()) == []
    assert len(objects_in(store)) == 3


def staging_entries(out: Path) -> list[str]:
    """Hidden entries of the output directory but the records of finished exports (.NAME.osbuild-export)."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and not p.name.endswith(".osbuild-export")) \
        if out.exists() else []


def test_sigkill_during_an_export_leaves_nothing_that_lasts(lib: Library, tmp_path: Path) -> None:
    """Killed while it copies, an export leaves the previous result whole, and its staging copy goes at the next export."""
    store, out = tmp_path / "store", tmp_path / "out"
    first = {"stages": [stage_call(files={"/version": "first"})]}
    lib.build_tree(first, store, out)
    big = {"stages": [stage_call(files={"/version": "second"}), stage_call(random={f"/blob-{i}": 32 << 20 for i in range(8)})]}
    lib.build_json(big, store)  # the tree is in the store: the next run only exports it
    caught = []
    for _ in range(5):
        proc = lib.popen("--store", str(store), "--output-directory", str(out), "--export", "tree", manifest=big)
        try:
            deadline = time.monotonic() + 60
            while not staging_entries(out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            caught = staging_entries(out)
        finally:
            kill_group(proc)
            proc.wait()
        if caught and proc.returncode == -9:
            break
    assert caught, "the export was never caught while it copied"
    assert staging_entries(out) == caught, "the killed export left its staging directory"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["tree"]
    assert (out / "tree/version").read_text() == "first", "the previous export is whole"

    lib.build_tree(first, store, out)
    assert staging_entries(out) == [], "the next export removes what the killed one left"
    assert (out / "tree/version").read_text() == "first"
    assert sorted(p.name for p in (out / "tree").iterdir()) == ["version"]


def test_an_export_keeps_the_staging_directory_of_a_running_export(lib: Library, tmp_path: Path) -> None:
    """A staging directory whose process lives (this test's) is not debris, whatever its name says."""
    out = tmp_path / "out"
    out.mkdir()
    mine = out / f".tree.tmp-{os.getpid()}-{process_start(os.getpid())}"
    mine.mkdir()
    reused = out / f".tree.tmp-{os.getpid()}-1"   # same pid, another start: a process that is gone
    reused.mkdir()
    lib.build_tree({"stages": [stage_call(files={"/a": "a"})]}, tmp_path / "store", out)
    assert staging_entries(out) == [mine.name]
