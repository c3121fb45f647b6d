"""Two builds on one store at the same time: both succeed, and a stage they share is built once."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from testlib import Library, kill_group, objects_in, stage_call, statuses, wait_for_line


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    """Wait for a --json build started with popen(); its result. Fails unless it succeeded."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstderr:\n{err}"
    result: dict[str, Any] = json.loads(out)
    return result


def shared_prefix(tail: str) -> dict[str, Any]:
    return {"stages": [stage_call(files={"/shared": "x"}, say="shared stage running", sleep=2),
                       stage_call(files={"/tail": tail})]}


def test_same_manifest_twice_at_once(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    manifest = shared_prefix("same")
    first = lib.popen("--store", str(store), "--json", manifest=manifest)
    second = lib.popen("--store", str(store), "--json", manifest=manifest)
    results = [finish(first), finish(second)]
    assert results[0]["tree_id"] == results[1]["tree_id"]
    for position in range(2):
        got = sorted(statuses(r)[position] for r in results)
        assert got == ["built", "cached"], f"stage {position} was built {got.count('built')} times"
    assert len(objects_in(store)) == 2


def test_different_manifests_sharing_a_prefix(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = lib.popen("--store", str(store), "--json", manifest=shared_prefix("one"))
    two = lib.popen("--store", str(store), "--json", manifest=shared_prefix("two"))
    results = [finish(one), finish(two)]
    shared = sorted(statuses(r)[0] for r in results)
    assert shared == ["built", "cached"], "the shared stage was built by both builds"
    assert [statuses(r)[1] for r in results] == ["built", "built"]
    assert len(objects_in(store)) == 3
    for name, result in zip(("one", "two"), results):
        tree = lib.build_tree(shared_prefix(name), store, tmp_path / name)
        assert (tree / "tail").read_text() == name
        assert (tree / "shared").read_text() == "x"
        assert result["tree_id"] == json.loads(lib.run("--inspect", manifest=shared_prefix(name)).stdout)["tree_id"]


def test_waiting_build_reuses_the_shared_stage_as_soon_as_it_is_committed(lib: Library, tmp_path: Path) -> None:
    """The second build takes the shared object when it is committed, not when the first build ends."""
    store = tmp_path / "store"
    long_build = {"stages": [stage_call(files={"/shared": "x"}, say="shared stage running", sleep=2),
                             stage_call(say="long stage running", sleep=30)]}
    first = lib.popen("--store", str(store), "--json", "--monitor", "log", "--monitor-fd", "1", manifest=long_build)
    try:
        wait_for_line(first, "shared stage running")
        second = lib.popen("--store", str(store), "--json", manifest=shared_prefix("short"))
        result = finish(second, timeout=25)
        assert statuses(result) == ["cached", "built"]
        assert first.poll() is None, "the first build ended before the second: the test proves nothing"
    finally:
        kill_group(first)
        first.wait()


def test_waiting_build_takes_over_when_the_builder_dies(lib: Library, tmp_path: Path) -> None:
    """If the build that claimed a shared stage is killed, the build waiting for it builds it itself."""
    store = tmp_path / "store"
    doomed = lib.popen("--store", str(store),
                       manifest={"stages": [stage_call(files={"/shared": "x"}, say="shared stage running", sleep=60)]})
    try:
        wait_for_line(doomed, "shared stage running")
        waiting = lib.popen("--store", str(store),
                            manifest={"stages": [stage_call(files={"/shared": "x"}, say="shared stage running", sleep=60),
                                                 stage_call(files={"/mine": "y"})]})
        time.sleep(1)  # let it reach the claim
        assert waiting.poll() is None
    finally:
        kill_group(doomed)
        doomed.wait()
    try:
        wait_for_line(waiting, "shared stage running")
    finally:
        kill_group(waiting)
        waiting.wait()
    assert objects_in(store) == set(), "a killed build committed nothing"


@pytest.mark.parametrize("attempt", range(3))
def test_builds_creating_one_new_store_at_once(lib: Library, tmp_path: Path, attempt: int) -> None:
    """Several builds start on a store that does not exist yet; all of them create it and succeed.

    A race, so tried a few times over: each attempt is a fresh store.
    """
    store = tmp_path / "store"
    procs = [lib.popen("--store", str(store), "--json", manifest={"stages": [stage_call(marker=f"{attempt}-{i}")]})
             for i in range(5)]
    results = [finish(proc) for proc in procs]
    assert all(r["success"] for r in results)
    assert (store / "VERSION").read_text() == "1\n"
    assert len(objects_in(store)) == 5
