"""--cache-max-size evicts the least recently used objects; --checkpoint keeps named ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testlib import Library, assert_one_line_error, kill_group, objects_in, stage_call, statuses, wait_for_line

MiB = 1024 * 1024


def blob(name: str, size: int = 2 * MiB) -> dict[str, Any]:
    """A one-stage manifest whose object holds `size` bytes."""
    return {"stages": [stage_call(random={f"/{name}": size})]}


def tree_id(result: dict[str, Any]) -> str:
    value: str = result["tree_id"]
    return value


def test_least_recently_used_objects_go_first(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = tree_id(lib.build_json(blob("a"), store))
    b = tree_id(lib.build_json(blob("b"), store))
    # Using a again makes b the least recently used, though a is older.
    assert statuses(lib.build_json(blob("a"), store)) == ["cached"]
    result = lib.build_json(blob("c"), store, "--cache-max-size", "5M")
    assert result["success"]
    assert statuses(result) == ["built"]
    assert objects_in(store) == {a, tree_id(result)}
    assert b not in objects_in(store)
    # A user sees it: b has to be built again, a does not.
    assert statuses(lib.build_json(blob("b"), store, "--cache-max-size", "5M")) == ["built"]


def test_without_a_limit_nothing_is_evicted(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = {tree_id(lib.build_json(blob(name), store)) for name in ("a", "b", "c")}
    assert objects_in(store) == ids


def test_a_build_larger_than_the_limit_succeeds_and_keeps_its_result(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lib.build_json(blob("a"), store)
    manifest = {"stages": [stage_call(random={"/big": 4 * MiB}), stage_call(random={"/bigger": 4 * MiB})],
                "assembler": {"name": "org.osbuild.test.asm", "options": {"random": {"image": MiB}}}}
    result = lib.build_json(manifest, store, "--cache-max-size", "3M")
    assert result["success"]
    ids = {s["id"] for p in result["pipelines"].values() for s in p["stages"]}
    assert objects_in(store) == ids, "the build's own objects are admitted; older ones make room"
    again = lib.build_json(manifest, store, "--cache-max-size", "3M")
    assert set(statuses(again)) == {"cached"}


def test_evicting_an_object_evicts_the_layers_above_it(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    stack = {"stages": [stage_call(random={"/base": 2 * MiB}), stage_call(files={"/top": "small"})]}
    first = lib.build_json(stack, store)
    base_id, top_id = (s["id"] for s in first["pipelines"]["tree"]["stages"])
    # The small top layer was used last; evicting its big base must take it too, or it would be a broken tree.
    lib.build_json(blob("other", 3 * MiB), store, "--cache-max-size", "4M")
    assert base_id not in objects_in(store)
    assert top_id not in objects_in(store)
    assert statuses(lib.build_json(stack, store)) == ["built", "built"]


def test_objects_in_use_by_a_running_build_are_not_evicted(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    running = {"stages": [stage_call(random={"/big": 2 * MiB}), stage_call(say="using its tree", sleep=4)]}
    proc = lib.popen("--store", str(store), manifest=running)
    try:
        wait_for_line(proc, "using its tree")
        in_use = objects_in(store)
        assert len(in_use) == 1
        lib.build_json(blob("other"), store, "--cache-max-size", "1M")
        assert in_use <= objects_in(store), "another build evicted an object this build stands on"
        assert proc.wait(timeout=60) == 0
    finally:
        kill_group(proc)
        proc.wait()
    assert statuses(lib.build_json(running, store)) == ["cached", "cached"]


def test_checkpoint_keeps_named_objects_from_eviction(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    manifest = {"stages": [stage_call(random={"/tree": 2 * MiB})],
                "assembler": {"name": "org.osbuild.test.asm", "options": {"random": {"image": 2 * MiB}}}}
    lib.build_json(manifest, store)
    # Another build evicts the tree (the oldest object) but leaves the assembler's output.
    other = tree_id(lib.build_json(blob("other"), store, "--cache-max-size", "4500K"))
    result = lib.build_json(manifest, store, "--cache-max-size", "4500K", "--checkpoint", "assembler")
    assert statuses(result) == ["built"]
    assert statuses(result, "assembler") == ["cached"], "the checkpointed output was evicted and built again"
    assert other not in objects_in(store)


def test_checkpoint_must_name_something(lib: Library, tmp_path: Path) -> None:
    proc = lib.run("--store", str(tmp_path / "store"), "--checkpoint", "nothing-by-this-name", manifest=blob("a"), check=False)
    assert_one_line_error(proc, 2, "--checkpoint 'nothing-by-this-name'")
    assert not (tmp_path / "store").exists()
