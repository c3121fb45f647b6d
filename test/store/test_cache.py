"""The store: what did not change is never built twice, and keeping a stage costs what it changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from testlib import TEST_STAGE, Library, du_bytes, objects_in, stage_call, statuses

MiB = 1024 * 1024


def chain(n: int, changed: int | None = None) -> dict[str, Any]:
    """n stages that each add a file; stage `changed` (0-based) writes different text."""
    stages = []
    for i in range(n):
        text = f"stage {i}" + (" changed" if i == changed else "")
        stages.append(stage_call(files={f"/f{i}": text}))
    return {"stages": stages, "assembler": {"name": "org.osbuild.test.asm"}}


def test_second_run_builds_nothing(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = lib.build_json(chain(3), store)
    assert statuses(first) == ["built"] * 3
    assert statuses(first, "assembler") == ["built"]
    objects = objects_in(store)
    second = lib.build_json(chain(3), store)
    assert statuses(second) == ["cached"] * 3
    assert statuses(second, "assembler") == ["cached"]
    assert second["tree_id"] == first["tree_id"]
    assert second["output_id"] == first["output_id"]
    assert objects_in(store) == objects


def test_cached_tree_is_the_built_tree(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    built = lib.build_tree(chain(3), store, tmp_path / "first")
    cached = lib.build_tree(chain(3), store, tmp_path / "second")
    for tree in (built, cached):
        assert {p.name: p.read_text() for p in tree.iterdir()} == {f"f{i}": f"stage {i}" for i in range(3)}


@pytest.mark.parametrize("k", [0, 2, 3])
def test_changing_stage_k_rebuilds_k_to_n(lib: Library, tmp_path: Path, k: int) -> None:
    store = tmp_path / "store"
    out = tmp_path / "out"
    lib.build_json(chain(4), store)
    result = lib.build_json(chain(4, changed=k), store, "--output-directory", str(out), "--export", "tree",
                            "--export", "assembler")
    assert statuses(result) == ["cached"] * k + ["built"] * (4 - k)
    assert statuses(result, "assembler") == ["built"]
    assert (out / "tree" / f"f{k}").read_text() == f"stage {k} changed"
    # Going back to the old manifest needs nothing new: its objects are still there.
    again = lib.build_json(chain(4), store)
    assert set(statuses(again)) == {"cached"}


def test_store_grows_by_what_a_stage_changed(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = [stage_call(random={"/big/a": 30 * MiB, "/big/b": 20 * MiB})]
    lib.build_json({"stages": base}, store)
    before = du_bytes(store)
    assert before >= 50 * MiB
    result = lib.build_json({"stages": [*base, stage_call(random={"/small": MiB})]}, store)
    assert statuses(result) == ["cached", "built"]
    grown = du_bytes(store) - before
    assert MiB <= grown < MiB + 512 * 1024, f"a 1 MiB stage on a 50 MiB tree grew the store by {grown} bytes"
    # Changing a small file on top costs the small file, not the tree.
    before = du_bytes(store)
    lib.build_json({"stages": [*base, stage_call(random={"/small": MiB}), stage_call(files={"/small": "now tiny"})]}, store)
    assert du_bytes(store) - before < 256 * 1024


def test_object_records_what_made_it(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = lib.build_json({"stages": [stage_call(files={"/a": "a"}, metadata={"packages": ["x"]}),
                                        stage_call(random={"/b": 2 * MiB})]}, store)
    first, second = (s["id"] for s in result["pipelines"]["tree"]["stages"])
    record = json.loads((store / "objects" / second / "object.json").read_text())
    assert record["parent"] == first
    assert record["type"] == TEST_STAGE
    assert 2 * MiB <= record["size"] < 2 * MiB + 64 * 1024
    assert result["metadata"] == {"tree": {TEST_STAGE: {"packages": ["x"]}}}
    # The metadata is kept with the object: a cached run reports it too.
    assert lib.build_json({"stages": [stage_call(files={"/a": "a"}, metadata={"packages": ["x"]}),
                                      stage_call(random={"/b": 2 * MiB})]}, store)["metadata"] == result["metadata"]


def tree_files(tree: Path) -> dict[str, str]:
    """Every file of an exported tree (relative path -> text); directories as "DIR"."""
    return {str(p.relative_to(tree)): ("DIR" if p.is_dir() else p.read_text()) for p in sorted(tree.rglob("*"))}


def test_layers_stack_removals_and_replaced_directories(lib: Library, tmp_path: Path) -> None:
    """A stage's layer records removals too: a later tree shows exactly what the stages left."""
    store = tmp_path / "store"
    stages = [
        stage_call(files={"/keep": "kept", "/gone": "removed later", "/dir/old": "in the old dir", "/dir/sub/deep": "deep"}),
        stage_call(remove=["/gone", "/dir"], files={"/dir/new": "in the new dir"}),
        stage_call(files={"/keep": "changed"}),
    ]
    tree = lib.build_tree({"stages": stages}, store, tmp_path / "out")
    assert tree_files(tree) == {"dir": "DIR", "dir/new": "in the new dir", "keep": "changed"}
    # Each intermediate tree is still what its stages made: the first one is untouched by the later removals.
    first = lib.build_tree({"stages": stages[:1]}, store, tmp_path / "first")
    assert tree_files(first) == {"dir": "DIR", "dir/old": "in the old dir", "dir/sub": "DIR", "dir/sub/deep": "deep",
                                 "gone": "removed later", "keep": "kept"}
    second = lib.build_tree({"stages": stages[:2]}, store, tmp_path / "second")
    assert tree_files(second) == {"dir": "DIR", "dir/new": "in the new dir", "keep": "kept"}
    # And a stage on top of the removals sees them too.
    more = lib.build_tree({"stages": [*stages, stage_call(files={"/dir/more": "m"})]}, store, tmp_path / "more")
    assert tree_files(more) == {"dir": "DIR", "dir/more": "m", "dir/new": "in the new dir", "keep": "changed"}
