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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osbuild.treediff import diff

REPO = Path(__file__).resolve().parent.parent

# A fixed source epoch (2023-11-14) for trees whose content depends on the date (shadow's password dates).
SOURCE_EPOCH = 1700000000


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
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=full_env,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"osbuild failed with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def manifest_of(stages: list[dict[str, Any]], assembler: dict[str, Any] | None = None,
                build: dict[str, Any] | None = None, sources: dict[str, Any] | None = None,
                source_epoch: int | None = None) -> dict[str, Any]:
    """A format-1 manifest from its parts."""
    pipeline: dict[str, Any] = {"stages": stages}
    if build is not None:
        pipeline["build"] = build
    if assembler is not None:
        pipeline["assembler"] = assembler
    if source_epoch is not None:
        pipeline["source-epoch"] = source_epoch
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
_export_dirs: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where export_tree keeps its trees for the whole session. Not a test's tmp_path: pytest
    removes that when the test passes, and later tests reuse the exports."""
    path = tmp_path_factory.mktemp("exports")
    _export_dirs.append(path)
    yield path
    _export_dirs.remove(path)


def export_tree(stages: list[dict[str, Any]], store: Path, build: dict[str, Any] | None = None,
                sources: dict[str, Any] | None = None, source_epoch: int | None = None) -> Path:
    """The tree a list of stages builds, exported once per session for each distinct manifest."""
    manifest = manifest_of(stages, build=build, sources=sources, source_epoch=source_epoch)
    key = json.dumps([manifest, str(store)], sort_keys=True)
    if key not in _exported:
        _exported[key] = build_tree(manifest, store, _export_dirs[-1] / f"export-{len(_exported)}")
    return _exported[key]


def stage_changes(base: list[dict[str, Any]], added: list[dict[str, Any]], store: Path,
                  build: dict[str, Any] | None = None, sources: dict[str, Any] | None = None,
                  source_epoch: int | None = None) -> dict[str, Any]:
    """What `added` stages change in the tree `base` stages build: a tree diff with text.

    With `source_epoch`, both trees are built with it (so the base is a tree of its own in the store).
    """
    before = export_tree(base, store, build, sources, source_epoch)
    after = export_tree(base + added, store, build, sources, source_epoch)
    return diff(str(before), str(after), text=True)


def build_failure(stages: list[dict[str, Any]], store: Path, sources: dict[str, Any] | None = None,
                  source_epoch: int | None = None) -> str:
    """Build stages that must fail in a stage (exit status 1); the engine's report of the failure."""
    manifest = manifest_of(stages, sources=sources, source_epoch=source_epoch)
    proc = run_osbuild("--store", str(store), manifest=manifest, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def assert_rejected(stage: str, options: dict[str, Any], path: str, store: Path) -> None:
    """A manifest that calls `stage` with `options` is refused before anything runs: exit status 2 and
    one error line naming the JSON path of the bad value (`.stages[0].options...`)."""
    proc = run_osbuild("--store", str(store), manifest=manifest_of([{"name": stage, "options": options}]), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: <stdin>: {path}: " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


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
    """Stages (and their sources) that build a minimal Debian bookworm tree with systemd, locked today.

    Its helpers build with SOURCE_EPOCH, so every test that uses them shares one base tree.
    """

    def __init__(self, stages: list[dict[str, Any]], sources: dict[str, Any], work: Path) -> None:
        self.stages = stages
        self.sources = sources
        self._work = work
        self._apt_locks: dict[tuple[tuple[str, ...], ...], dict[str, Any]] = {}

    def with_sources(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        """The base's sources plus `extra` (another manifest's sources)."""
        urls = dict(self.sources["org.osbuild.files"]["urls"])
        if extra:
            urls.update(extra["org.osbuild.files"]["urls"])
        return {"org.osbuild.files": {"urls": urls}}

    def manifest(self, added: list[dict[str, Any]] | None = None, sources: dict[str, Any] | None = None) -> dict[str, Any]:
        """The manifest of the base plus `added` stages (whose packages, if any, are in `sources`)."""
        return manifest_of(self.stages + (added or []), sources=self.with_sources(sources), source_epoch=SOURCE_EPOCH)

    def export(self, added: list[dict[str, Any]], store: Path, sources: dict[str, Any] | None = None) -> Path:
        """The tree of the base plus `added` stages, exported once per session."""
        return export_tree(self.stages + added, store, sources=self.with_sources(sources), source_epoch=SOURCE_EPOCH)

    def tree(self, store: Path) -> Path:
        """The base tree, exported."""
        return self.export([], store)

    def changes(self, added: list[dict[str, Any]], store: Path, sources: dict[str, Any] | None = None,
                on: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """What `added` stages change in the base tree, or in the tree of the base plus the stages `on`."""
        before = self.export(on or [], store, sources)
        return diff(str(before), str(self.export([*(on or []), *added], store, sources)), text=True)

    def failure(self, added: list[dict[str, Any]], store: Path, sources: dict[str, Any] | None = None) -> str:
        """The engine's report of `added` failing on the base tree."""
        return build_failure(self.stages + added, store, sources=self.with_sources(sources), source_epoch=SOURCE_EPOCH)

    def lock_apt(self, *requests: list[str]) -> dict[str, Any]:
        """A locked manifest of the base plus one org.osbuild.apt stage per request (a list of package names).

        Needs deb.debian.org. The bootstrap is locked again with them; tests use the apt stages
        (`["pipeline"]["stages"][1:]`) and the manifest's sources on top of this base.
        """
        key = tuple(tuple(request) for request in requests)
        if key not in self._apt_locks:
            apt = [{"name": "org.osbuild.apt", "options": {"include": list(request)}} for request in requests]
            template = {"pipeline": {"stages": [DEBIAN_REQUEST, *apt]}}
            self._apt_locks[key] = depsolve(template, self._work / f"apt-{len(self._apt_locks)}")
        return self._apt_locks[key]


def depsolve(template: dict[str, Any], work: Path) -> dict[str, Any]:
    """The manifest osbuild-depsolve-apt locks `template` into."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "template.json").write_text(json.dumps(template))
    proc = subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(work / "template.json"),
                           "-o", str(work / "locked.json")], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"osbuild-depsolve-apt failed with {proc.returncode}:\n{proc.stderr}")
    locked: dict[str, Any] = json.loads((work / "locked.json").read_text())
    return locked


@pytest.fixture(scope="session")
def debian_base(tmp_path_factory: pytest.TempPathFactory) -> DebianBase:
    """Lock a minimal Debian tree against the mirror once per session (needs deb.debian.org)."""
    work = tmp_path_factory.mktemp("debian-base")
    manifest = depsolve({"pipeline": {"stages": [DEBIAN_REQUEST]}}, work)
    return DebianBase(manifest["pipeline"]["stages"], manifest["sources"], work)


@pytest.fixture(scope="session")
def locked_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The format-1 sample, locked against the mirror today (the original-format example; the default
    is the format-2 one, test/image/test_format2_sample.py)."""
    out = tmp_path_factory.mktemp("locked") / "locked.json"
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(REPO / "samples/debian-bookworm-qcow2.json"),
                    "-o", str(out)], check=True, capture_output=True, text=True)
    locked: dict[str, Any] = json.loads(out.read_text())
    return locked


@pytest.fixture
def lib(tmp_path: Path) -> Any:
    """A library directory of purpose-built test modules (testlib.Library) for one test."""
    from testlib import Library  # noqa: PLC0415 (testlib imports conftest: a top-level import would be circular)

    return Library(tmp_path / "lib")
