"""Shared test harness: run osbuild as a user would, build trees, compare them.

Everything here runs the real engine through its command line (`python3 -m osbuild`)
in a subprocess, so each build gets its own mount namespace like a user's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_osbuild(*args: str, manifest: Any = None, check: bool = True, timeout: float = 3600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python3 -m osbuild --libdir REPO ARGS...`; a dict manifest is passed on stdin as `-`."""
    argv = [sys.executable, "-m", "osbuild", "--libdir", str(REPO), *args]
    stdin = None
    if manifest is not None:
        argv.append("-")
        stdin = json.dumps(manifest)
    full_env = dict(os.environ, PYTHONPATH=str(REPO))
    if env:
        full_env.update(env)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"osbuild failed with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def manifest_of(stages: list[dict[str, Any]], assembler: dict[str, Any] | None = None,
                build: dict[str, Any] | None = None, sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """A format-1 manifest from its parts."""
    pipeline: dict[str, Any] = {"stages": stages}
    if build is not None:
        pipeline["build"] = build
    if assembler is not None:
        pipeline["assembler"] = assembler
    if sources:
        return {"pipeline": pipeline, "sources": sources}
    return pipeline


def build_tree(manifest: dict[str, Any], store: Path, out: Path, export: str = "tree") -> Path:
    """Build a manifest and export one pipeline; returns the exported directory."""
    run_osbuild("--store", str(store), "--output-directory", str(out), "--export", export, manifest=manifest)
    return out / export


def build_json(manifest: dict[str, Any], store: Path, *args: str) -> dict[str, Any]:
    """Build a manifest with --json and return the parsed result."""
    proc = run_osbuild("--store", str(store), "--json", *args, manifest=manifest)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One store for the whole session, so tests that share stages share their objects."""
    path = Path(os.environ.get("OSBUILD_TEST_STORE", "")) if os.environ.get("OSBUILD_TEST_STORE") else None
    if path is None:
        path = tmp_path_factory.mktemp("store")
    yield path


_exported: dict[str, Path] = {}


def export_tree(stages: list[dict[str, Any]], store: Path, tmp: Path, build: dict[str, Any] | None = None,
                sources: dict[str, Any] | None = None) -> Path:
    """The tree a list of stages builds, exported once per session for each distinct manifest."""
    manifest = manifest_of(stages, build=build, sources=sources)
    key = json.dumps([manifest, str(store)], sort_keys=True)
    if key not in _exported or not _exported[key].exists():
        out = tmp / f"export-{len(_exported)}"
        _exported[key] = build_tree(manifest, store, out)
    return _exported[key]


def stage_changes(base: list[dict[str, Any]], added: list[dict[str, Any]], store: Path, tmp: Path,
                  build: dict[str, Any] | None = None, sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `added` stages change in the tree `base` stages build: a tree diff with text."""
    from osbuild.treediff import diff

    before = export_tree(base, store, tmp, build, sources)
    after = export_tree(base + added, store, tmp, build, sources)
    return diff(str(before), str(after), text=True)


def assert_changes(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """The tree diff has exactly the expected paths, and each expected field has the expected value.

    `expected` has the shape of a tree diff; fields it leaves out of an entry are not
    checked, and a missing section ("added", "removed", "changed") means "nothing".
    """
    for section in ("added", "removed", "changed"):
        got = actual.get(section, {})
        want = expected.get(section, {})
        assert sorted(got) == sorted(want), f"{section}: got paths {sorted(got)}, expected {sorted(want)}"
        for path, fields in want.items():
            for name, value in fields.items():
                assert got[path].get(name) == value, f"{section} {path} {name}: got {got[path].get(name)!r}, expected {value!r}"


DEBIAN_REQUEST = {
    "name": "org.osbuild.debian.bootstrap",
    "options": {
        "suite": "bookworm",
        "variant": "minbase",
        "apt_sources": ["deb http://deb.debian.org/debian bookworm main"],
        "include": ["systemd"],
    },
}


class DebianBase:
    """Stages (and their sources) that build a minimal Debian bookworm tree with systemd, locked today."""

    def __init__(self, stages: list[dict[str, Any]], sources: dict[str, Any]) -> None:
        self.stages = stages
        self.sources = sources


@pytest.fixture(scope="session")
def debian_base(tmp_path_factory: pytest.TempPathFactory) -> DebianBase:
    """Lock a minimal Debian tree against the mirror once per session (needs deb.debian.org)."""
    work = tmp_path_factory.mktemp("debian-base")
    template = work / "template.json"
    template.write_text(json.dumps({"pipeline": {"stages": [DEBIAN_REQUEST]}}))
    locked = work / "locked.json"
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(template), "-o", str(locked)],
                   check=True, capture_output=True, text=True)
    manifest = json.loads(locked.read_text())
    return DebianBase(manifest["pipeline"]["stages"], manifest["sources"])
