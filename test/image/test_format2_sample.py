"""samples/debian-bookworm-v2.json: the default image in format 2, locked by the same tool, the same bytes.

The sample is the format-1 sample as two format-2 pipelines: `os` (the tree) and
`image`, whose one stage is the qemu assembler with `os` as its tree input. Disk
stages come with a later issue; until then the assembler serves as a stage.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, build_json, run_osbuild

pytestmark = [pytest.mark.image]

SAMPLE = REPO / "samples/debian-bookworm-v2.json"
IMAGE = "debian-bookworm.qcow2"


@pytest.fixture(scope="module")
def locked_v2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("locked-v2") / "locked.json"
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(SAMPLE), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    locked: dict[str, Any] = json.loads(out.read_text())
    return locked


def debs(stages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Each Debian stage's locked packages: format 1's `debs` option, or format 2's `packages` input."""
    found = []
    for stage in stages:
        if "debs" in stage.get("options", {}):
            found.append(stage["options"]["debs"])
        elif "packages" in stage.get("inputs", {}):
            found.append([{"name": ref["options"]["metadata"]["deb.name"], "version": ref["options"]["metadata"]["deb.version"],
                           "arch": ref["options"]["metadata"]["deb.arch"], "checksum": ref["id"]}
                          for ref in stage["inputs"]["packages"]["references"]])
    return found


def test_the_lock_is_format_1s_lock_in_format_2s_words(locked_v2: dict[str, Any], locked_sample: dict[str, Any]) -> None:
    assert locked_v2["version"] == "2"
    items = locked_v2["sources"]["org.osbuild.curl"]["items"]
    assert all(isinstance(url, str) and url.endswith(".deb") for url in items.values())
    assert debs(locked_v2["pipelines"][0]["stages"]) == debs(locked_sample["pipeline"]["stages"])
    assert set(items) == set(locked_sample["sources"]["org.osbuild.files"]["urls"])
    proc = run_osbuild("--inspect", manifest=locked_v2)
    ids = json.loads(proc.stdout)
    assert [p["name"] for p in ids["pipelines"]] == ["os", "image"]


@pytest.mark.boot
def test_the_format_2_image_is_the_format_1_image_and_boots(locked_v2: dict[str, Any], locked_sample: dict[str, Any],
                                                             shared_store: Path, tmp_path: Path) -> None:
    run_osbuild("--store", str(shared_store), "--output-directory", str(tmp_path / "v1"), "--export", "assembler",
                manifest=locked_sample)
    result = build_json(locked_v2, shared_store, "--output-directory", str(tmp_path / "v2"), "--export", "image")
    assert result["success"], result
    # Format 2 gives the packages as inputs, not options: other ids, the same tree, the same bytes.
    first = hashlib.sha256((tmp_path / "v1" / "assembler" / IMAGE).read_bytes()).hexdigest()
    second = hashlib.sha256((tmp_path / "v2" / "image" / IMAGE).read_bytes()).hexdigest()
    assert first == second
    booted = subprocess.run([sys.executable, str(REPO / "tools/osbuild-boot-test"), str(tmp_path / "v2" / "image" / IMAGE),
                             "--log", str(tmp_path / "console.log"), "--timeout", "600", "--login", "root:osbuild"],
                            capture_output=True, text=True, check=False)
    assert booted.returncode == 0 and "PASS" in booted.stdout, booted.stdout + booted.stderr
