"""A build killed mid-stage leaves no partial object and no mount; the next run cleans up and succeeds."""

from __future__ import annotations

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
