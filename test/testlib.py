"""Helpers for the engine's tests: a library directory of purpose-built modules, and ways to watch a build.

A test that needs a stage the project does not ship (one that sleeps, fails, writes
a given number of bytes, or tries to leave its sandbox) writes it into its own
library directory and runs `osbuild --libdir THAT`. Modules written here are real
programs run by the real engine under bubblewrap; nothing is faked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conftest import REPO, run_osbuild

# Imports and helpers every test module starts with; the body defines main().
MODULE_PRELUDE = '''#!/usr/bin/python3
import errno
import json
import os
import socket
import subprocess
import sys
import time

import osbuild.api


def attempt(fn):
    """Run fn; the outcome as data: {"ok": true, "value": ...} or {"ok": false, "errno": ..., "error": ...}."""
    try:
        return {"ok": True, "value": fn()}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": str(e)}
    except subprocess.CalledProcessError as e:
        return {"ok": False, "status": e.returncode, "error": (e.stderr or b"").decode(errors="replace").strip()}


def write_report(directory, data):
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)

'''
MODULE_EPILOGUE = '''

if __name__ == "__main__":
    osbuild.api.main(main)
'''

# A stage that does what its options say, for tests of the engine rather than of a stage.
TEST_STAGE = "org.osbuild.test"
TEST_STAGE_BODY = '''
def main(tree, options):
    for line in options.get("print", []):
        print(line, flush=True)
    for path in options.get("remove", []):
        target = osbuild.api.tree_path(tree, path)
        if os.path.isdir(target) and not os.path.islink(target):
            subprocess.run(["rm", "-r", target], check=True)
        else:
            os.unlink(target)
    for path, text in sorted(options.get("files", {}).items()):
        target = osbuild.api.tree_path(tree, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    for path, size in sorted(options.get("random", {}).items()):
        target = osbuild.api.tree_path(tree, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            for _ in range(size // 65536):
                f.write(os.urandom(65536))
            f.write(os.urandom(size % 65536))
    if "metadata" in options:
        osbuild.api.metadata(options["metadata"])
    if "say" in options:
        print(options["say"], flush=True)
    time.sleep(options.get("sleep", 0))
    return options.get("exit", 0)
'''
TEST_STAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "random": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "print": {"type": "array", "items": {"type": "string"}},
        "remove": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "say": {"type": "string"},
        "sleep": {"type": "number", "minimum": 0},
        "exit": {"type": "integer", "minimum": 0, "maximum": 255},
        "marker": {"type": "string"},
    },
}

# An assembler that writes files to its output directory, after listing the tree it was given.
TEST_ASSEMBLER = "org.osbuild.test.asm"
TEST_ASSEMBLER_BODY = '''
def main(tree, output_dir, options):
    listing = []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            listing.append(os.path.relpath(os.path.join(root, name), tree))
    with open(os.path.join(output_dir, "listing.json"), "w", encoding="utf-8") as f:
        json.dump(listing, f)
    for path, size in sorted(options.get("random", {}).items()):
        with open(os.path.join(output_dir, path), "wb") as f:
            f.write(os.urandom(size))
    time.sleep(options.get("sleep", 0))
    return options.get("exit", 0)
'''
TEST_ASSEMBLER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "random": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "sleep": {"type": "number", "minimum": 0},
        "exit": {"type": "integer", "minimum": 0, "maximum": 255},
        "marker": {"type": "string"},
    },
}


class Library:
    """A library directory (stages/, assemblers/, runners/) for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for kind in ("stages", "assemblers", "runners", "sources"):
            (root / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "runners" / "org.osbuild.linux", root / "runners" / "org.osbuild.linux")
        for kind in ("stages", "assemblers"):
            for name in ("org.osbuild.noop", "org.osbuild.noop.meta.json"):
                shutil.copy2(REPO / kind / name, root / kind / name)
        # Format 2's inputs, devices and mounts are the engine's own: their meta files are the whole module.
        for kind in ("inputs", "devices", "mounts"):
            shutil.copytree(REPO / kind, root / kind)
        self.stage(TEST_STAGE, TEST_STAGE_BODY, schema=TEST_STAGE_SCHEMA)
        self.assembler(TEST_ASSEMBLER, TEST_ASSEMBLER_BODY, schema=TEST_ASSEMBLER_SCHEMA)

    def module(self, kind: str, name: str, body: str, schema: dict[str, Any] | None = None,
               meta: dict[str, Any] | None = None) -> Path:
        """Write a Python module (prelude, body defining main(), epilogue) and its meta file."""
        path = self.root / kind / name
        path.write_text(MODULE_PRELUDE + textwrap.dedent(body) + MODULE_EPILOGUE, encoding="utf-8")
        path.chmod(0o755)
        contract: dict[str, Any] = {"summary": f"test module {name}", "description": ["Written by a test."]}
        contract["schema"] = schema if schema is not None else {"type": "object"}
        contract.update(meta or {})
        (self.root / kind / f"{name}.meta.json").write_text(json.dumps(contract, indent=1), encoding="utf-8")
        return path

    def use_sources(self, *names: str) -> Library:
        """Put the project's own source modules of these names in this library."""
        for name in names:
            for suffix in ("", ".meta.json"):
                (self.root / "sources" / (name + suffix)).write_bytes((REPO / "sources" / (name + suffix)).read_bytes())
                (self.root / "sources" / (name + suffix)).chmod(0o755 if not suffix else 0o644)
        return self

    def stage(self, name: str, body: str, schema: dict[str, Any] | None = None, **meta: Any) -> Path:
        return self.module("stages", name, body, schema, meta)

    def assembler(self, name: str, body: str, schema: dict[str, Any] | None = None, **meta: Any) -> Path:
        return self.module("assemblers", name, body, schema, meta)

    def run(self, *args: str, manifest: Any = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run osbuild with this library directory."""
        return run_osbuild("--libdir", str(self.root), *args, manifest=manifest, check=check, timeout=timeout)

    def build_json(self, manifest: Any, store: Path, *args: str, check: bool = True) -> dict[str, Any]:
        """Build with --json; the parsed result."""
        proc = self.run("--store", str(store), "--json", *args, manifest=manifest, check=check)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def build_tree(self, manifest: Any, store: Path, out: Path, export: str = "tree") -> Path:
        """Build and export one pipeline; the exported directory."""
        self.run("--store", str(store), "--output-directory", str(out), "--export", export, manifest=manifest)
        return out / export

    def popen(self, *args: str, manifest: Any) -> subprocess.Popen[str]:
        """Start osbuild in its own process group, as a terminal starts a job, manifest on stdin.

        SIGINT is reset to its default: a suite started in the background (`make check &`, nohup)
        inherits it ignored, and an engine started like that would never see a Ctrl-C.
        """
        argv = osbuild_argv("--libdir", str(self.root), *args, "-")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env=osbuild_env(), start_new_session=True,
                                preexec_fn=default_sigint)  # noqa: PLW1509 (one sigaction, no locks)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(manifest))
        proc.stdin.close()
        proc.stdin = None  # so that communicate() does not flush it
        return proc


def default_sigint() -> None:
    """In a child before exec: SIGINT at its default disposition, whatever the parent had."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def osbuild_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "osbuild", *args]


def osbuild_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def stage_call(**options: Any) -> dict[str, Any]:
    """A call of the test stage with these options."""
    return {"name": TEST_STAGE, "options": options}


def statuses(result: dict[str, Any], pipeline: str = "tree") -> list[str]:
    """The status ("built" or "cached") of each stage of a pipeline in a --json result."""
    return [stage["status"] for stage in result["pipelines"][pipeline]["stages"]]


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    """Read the process's stdout until a line contains needle; the lines read. Fails on EOF or timeout."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"osbuild ended before printing {needle!r}; it printed:\n{''.join(seen)}"
                                 f"stderr:\n{proc.stderr.read() if proc.stderr else ''}")
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} within {timeout}s; got:\n{''.join(seen)}")


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal the process group a popen() started."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def processes_running(needle: str) -> list[int]:
    """Pids of host processes whose command line contains needle."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry))
    return found


def wait_until_gone(needle: str, timeout: float = 10) -> list[int]:
    """Wait for processes matching needle to end; those still running at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_running(needle)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def mounts_mentioning(text: str, pids: Sequence[str] = ("self",)) -> list[str]:
    """Lines of /proc/PID/mountinfo that mention text (a path, a tmpfs source name)."""
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as f:
                found += [line.strip() for line in f if text in line]
        except OSError:
            continue
    return found


def mounts_anywhere(text: str) -> list[str]:
    """Lines mentioning text in the mount table of any process on the host (every live mount namespace)."""
    pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    return mounts_mentioning(text, pids)


def du_bytes(path: Path) -> int:
    """Disk usage of a directory as du reports it, in bytes."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def objects_in(store: Path) -> set[str]:
    """Ids of the complete objects in a store."""
    objects = store / "objects"
    if not objects.is_dir():
        return set()
    return {entry.name for entry in objects.iterdir() if (entry / "object.json").is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """The run failed with `status` and one line on stderr, no traceback, containing every needle."""
    assert proc.returncode == status, f"exit status {proc.returncode}, expected {status}; stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line of error, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def invalid_manifest_lines(lib: Library, manifest: Any, store: Path, *args: str) -> list[str]:
    """The error lines of an invalid manifest (without `error: <stdin>: `); asserts exit 2, no traceback,
    nothing on stdout and an untouched store."""
    proc = lib.run("--store", str(store), *args, manifest=manifest, check=False)
    assert proc.returncode == 2, f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not store.exists(), "an invalid manifest must not open the store"
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("error: <stdin>: ") for line in lines), lines
    return [line[len("error: <stdin>: "):] for line in lines]


# -- format 2 ------------------------------------------------------------------------------


def v2_manifest(*pipelines: dict[str, Any], sources: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A format-2 manifest of these pipelines (and sources)."""
    manifest: dict[str, Any] = {"version": "2", "pipelines": list(pipelines), **fields}
    if sources:
        manifest["sources"] = sources
    return manifest


def v2_pipeline(name: str, *stages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A format-2 pipeline; `fields` are its other keys (build, runner, source_epoch as source-epoch)."""
    pipeline: dict[str, Any] = {"name": name, **{key.replace("_", "-"): value for key, value in fields.items()}}
    pipeline["stages"] = list(stages)
    return pipeline


def v2_stage(stage_type: str = TEST_STAGE, inputs: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A format-2 stage call (the test stage unless named), with options and inputs."""
    stage: dict[str, Any] = {"type": stage_type, "options": options}
    if inputs:
        stage["inputs"] = inputs
    return stage


def inline_source(data: bytes) -> tuple[str, dict[str, Any]]:
    """The checksum of data, and format 2's sources carrying it inline."""
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    return checksum, {"org.osbuild.inline": {"items": {checksum: {"encoding": "base64",
                                                                   "data": base64.b64encode(data).decode()}}}}


def tree_input(pipeline: str) -> dict[str, Any]:
    return {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": [f"name:{pipeline}"]}


def source_files_input(*checksums: str) -> dict[str, Any]:
    return {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": list(checksums)}


def pipeline_file_input(pipeline: str, path: str) -> dict[str, Any]:
    return {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
            "references": {f"name:{pipeline}": {"file": path}}}
