"""Bit-for-bit reproducible outputs: the same locked manifest, built in two stores at two times, gives the same bytes.

When outputs differ, the failure lists what differs between the two builds' trees
(tree-diff with modification times), so it says why.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DebianBase, build_tree, run_osbuild

from osbuild.treediff import diff, sha256_file

pytestmark = [pytest.mark.image]

EPOCH = 1704067200  # 2024-01-01T00:00:00Z
UUID = "4b7c1a3e-9d52-4c0f-8a61-2f3e5d6c7b8a"
SMALL_OUTPUTS = {
    "tar": {"name": "org.osbuild.tar", "options": {"filename": "tree.tar.gz", "compression": "gzip"}},
    "rawfs": {"name": "org.osbuild.rawfs", "options": {"filename": "root.ext4", "root_fs_uuid": UUID, "size": 1073741824}},
}
for _fmt in ("raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx"):
    SMALL_OUTPUTS[f"{_fmt} disk"] = {"name": "org.osbuild.qemu", "options": {
        "format": _fmt, "filename": f"disk.{_fmt}", "root_fs_uuid": UUID, "size": "1G", "bootloader": "none"}}


def sha256(path: Path) -> str:
    return sha256_file(str(path))


def with_assembler(base: DebianBase, assembler: dict[str, Any]) -> dict[str, Any]:
    return {"pipeline": {"source-epoch": EPOCH, "stages": copy.deepcopy(base.stages), "assembler": assembler},
            "sources": base.sources}


def fresh_store(path: Path, sources_from: Path | None) -> Path:
    """An empty object store; with `sources_from`, its downloads already cached (they are verified by checksum)."""
    if sources_from is not None and (sources_from / "sources").exists():
        shutil.copytree(sources_from / "sources", path / "sources")
    path.mkdir(parents=True, exist_ok=True)
    return path


def why_different(manifest: dict[str, Any], store_a: Path, store_b: Path, tmp: Path) -> str:
    """What differs between the trees the two stores built (they are cached: exporting builds nothing)."""
    tree_a = build_tree(manifest, store_a, tmp / "why-a")
    tree_b = build_tree(manifest, store_b, tmp / "why-b")
    difference = diff(str(tree_a), str(tree_b), times=True)
    return json.dumps(difference, indent=1, sort_keys=True)[:20000]


def build_output(manifest: dict[str, Any], store: Path, out: Path) -> Path:
    run_osbuild("--store", str(store), "--output-directory", str(out), "--export", "assembler", manifest=manifest)
    files = [p for p in (out / "assembler").iterdir()]
    assert len(files) == 1
    return files[0]


def test_minbase_tar_raw_and_every_disk_format_are_identical_across_stores(debian_base: DebianBase, tmp_path: Path) -> None:
    store_a = fresh_store(tmp_path / "store-a", None)
    first = {name: sha256(build_output(with_assembler(debian_base, asm), store_a, tmp_path / f"a-{i}"))
             for i, (name, asm) in enumerate(SMALL_OUTPUTS.items())}
    time.sleep(3)  # other build times: anything clock-dependent would differ
    store_b = fresh_store(tmp_path / "store-b", store_a)
    second = {name: sha256(build_output(with_assembler(debian_base, asm), store_b, tmp_path / f"b-{i}"))
              for i, (name, asm) in enumerate(SMALL_OUTPUTS.items())}
    if first != second:
        differing = [name for name in first if first[name] != second[name]]
        manifest = with_assembler(debian_base, SMALL_OUTPUTS["tar"])
        pytest.fail(f"outputs differ: {differing}\ntrees differ by:\n{why_different(manifest, store_a, store_b, tmp_path)}")


@pytest.mark.boot
def test_default_qcow2_is_identical_across_stores(tmp_path: Path, shared_store: Path,
                                                  locked_sample: dict[str, Any]) -> None:
    first = sha256(build_output(locked_sample, shared_store, tmp_path / "a"))
    store_b = fresh_store(tmp_path / "store-b", shared_store)
    second = sha256(build_output(locked_sample, store_b, tmp_path / "b"))
    if first != second:
        pytest.fail(f"qcow2 images differ\ntrees differ by:\n{why_different(locked_sample, shared_store, store_b, tmp_path)}")
