"""The Fedora samples need Fedora's mirrors, which these machines cannot reach: building them stops
at the first dnf stage with one line that names the unreachable mirror, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, run_osbuild


def stage_error_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines()
            if line.strip().startswith("error: ") and not line.startswith("error: stage ")]


def test_the_format_1_sample_build_root_stops_at_the_mirror(tmp_path: Path) -> None:
    sample = json.loads((REPO / "samples/fedora-30-qcow2.json").read_text())
    # Its build pipeline alone: the tree's stages wait for stages (selinux, fix-bls) of another branch.
    proc = run_osbuild("--store", str(tmp_path / "store"), manifest={"stages": sample["build"]["pipeline"]["stages"]},
                       check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = stage_error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: dnf: reading the repositories: "), proc.stderr
    assert "metalink" in lines[0] or "mirrors.fedoraproject.org" in lines[0], lines


def test_the_format_2_sample_stops_at_the_mirror(tmp_path: Path) -> None:
    proc = run_osbuild("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"),
                       "--export", "build", str(REPO / "samples/fedora-30-v2.json"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = stage_error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: dnf: reading the repositories: "), proc.stderr
