"""The command line: parse arguments, map errors to exit statuses. The work is in the library.

Exit statuses: 0 success, 1 build failure, 2 invalid manifest or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NoReturn

import osbuild
from osbuild import formats, mounts, sandbox
from osbuild.build import Builder, BuildResult
from osbuild.errors import BuildError, UserError
from osbuild.meta import Index, Problem
from osbuild.monitor import MONITORS, Monitor
from osbuild.objectstore import ObjectStore
from osbuild.pipeline import Manifest, Pipeline

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class Interrupted(Exception):
    pass


def default_libdir() -> str:
    """The checkout's root when run from one; the installed data directory otherwise."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(osbuild.__file__)))
    if os.path.isdir(os.path.join(package_parent, "stages")):
        return package_parent
    for candidate in (os.path.join(sys.prefix, "share", "osbuild"), "/usr/local/share/osbuild", "/usr/share/osbuild"):
        if os.path.isdir(os.path.join(candidate, "stages")):
            return candidate
    return package_parent


def parse_size(text: str) -> int | None:
    """`unlimited`, a number of bytes, or a number with K/M/G/T (binary units, optional `iB`/`B`)."""
    if text.strip().lower() in ("unlimited", "none", "-1"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (try 500M, 10G or unlimited)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="osbuild", description="Build operating-system images from a JSON manifest.")
    p.add_argument("manifest", metavar="MANIFEST", nargs="?", help="the manifest file, or - for standard input")
    p.add_argument("--version", action="version", version=f"osbuild {osbuild.__version__}")
    p.add_argument("--store", metavar="DIR", default=".osbuild", help="the store of trees and downloads (default: .osbuild)")
    p.add_argument("-l", "--libdir", metavar="DIR", default=None, help="where stages/, assemblers/, sources/ and runners/ are")
    p.add_argument("--build-pipeline", metavar="FILE", help="a build pipeline for a manifest that has none")
    p.add_argument("--output-directory", metavar="DIR", help="where exported pipelines go, one directory each")
    p.add_argument("--export", metavar="NAME", action="append", default=[], help="export this pipeline (repeatable)")
    p.add_argument("--checkpoint", metavar="NAME", action="append", default=[],
                   help="keep this pipeline's or stage's objects even when --cache-max-size evicts (name, id, or *)")
    p.add_argument("--cache-max-size", metavar="SIZE", type=parse_size, default=None,
                   help="evict least-recently-used objects beyond this size (default: unlimited)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result on standard output")
    p.add_argument("--inspect", action="store_true", help="print the manifest with every id; build nothing")
    p.add_argument("--monitor", choices=sorted(MONITORS), default=None, help="progress output: log (default), jsonseq, quiet")
    p.add_argument("--monitor-fd", metavar="FD", type=int, default=None, help="file descriptor for progress output")
    p.add_argument("--changes", metavar="STAGE",
                   help="print what a built stage changed (id, PIPELINE/TYPE or PIPELINE/INDEX); builds nothing")
    p.add_argument("--list-modules", action="store_true",
                   help="list the stages, assemblers, sources, runners, inputs, devices and mounts")
    return p


# What was read from standard input, for a build that starts again in a user namespace.
_stdin_text: list[str] = []


def read_input(path: str, what: str) -> str:
    try:
        if path == "-":
            _stdin_text.append(sys.stdin.read())
            return _stdin_text[-1]
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as e:
        raise UserError(f"{what} {path}: no such file") from e
    except IsADirectoryError as e:
        raise UserError(f"{what} {path}: is a directory") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path}: not UTF-8 text") from e
    except OSError as e:
        raise UserError(f"{what} {path}: {e.strerror}") from e


def load_manifest(args: argparse.Namespace, index: Index) -> tuple[Any, Manifest]:
    origin = "<stdin>" if args.manifest == "-" else args.manifest
    description = formats.parse_json(read_input(args.manifest, "manifest"), origin)
    build = None
    if args.build_pipeline:
        build = formats.parse_json(read_input(args.build_pipeline, "build pipeline"), args.build_pipeline)
    fmt = formats.detect(description, origin)
    problems = fmt.validate(description, index, build)
    if problems:
        raise InvalidManifest(origin, problems)
    return fmt, fmt.load(description, index, build)


# osbuild's identifiers of a validation failure, which programs that read its output look for.
VALIDATION_ERROR_TYPE = "https://osbuild.org/validation-error"
VALIDATION_ERROR_TITLE = "JSON Schema validation failed"


class InvalidManifest(UserError):
    def __init__(self, origin: str, problems: list[Problem]) -> None:
        self.lines = [f"{origin}: {p}" for p in problems]
        super().__init__("\n".join(self.lines))
        self.problems = problems

    def as_json(self) -> dict[str, Any]:
        """osbuild's validation-error document."""
        return {"type": VALIDATION_ERROR_TYPE, "title": VALIDATION_ERROR_TITLE, "success": False,
                "errors": [p.as_json() for p in self.problems]}


def select(manifest: Manifest, names: Sequence[str], what: str) -> list[Pipeline]:
    selected = []
    for name in names:
        pipeline = manifest.get(name)
        if pipeline is None:
            known = ", ".join(p.name for p in manifest.pipelines)
            raise UserError(f"{what} {name!r}: no such pipeline (the manifest has: {known})")
        selected.append(pipeline)
    return selected


def checkpoint_ids(manifest: Manifest, patterns: Sequence[str]) -> set[str]:
    """The stage ids --checkpoint names: shell patterns over pipeline names (all their stages), stage
    ids and stage types, as osbuild matches them, and id prefixes."""
    ids: set[str] = set()
    for pattern in patterns:
        matches: set[str] = set()
        for pipeline in manifest.pipelines:
            if fnmatch.fnmatchcase(pipeline.name, pattern):
                matches.update(s.id for s in pipeline.stages)
        for _, stage in manifest.stages():
            if fnmatch.fnmatchcase(stage.id, pattern) or fnmatch.fnmatchcase(stage.name, pattern) or stage.id.startswith(pattern):
                matches.add(stage.id)
        if not matches:
            raise UserError(f"--checkpoint {pattern!r}: no pipeline, stage type or id matches")
        ids.update(matches)
    return ids


def check_writable(directory: str) -> None:
    """Fail before building when the output directory cannot take the result."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise UserError(f"output directory {directory}: {e.strerror}") from e


def find_stage(manifest: Manifest, name: str) -> str:
    """The id of the stage `name` names: an id or its prefix, PIPELINE/TYPE, or PIPELINE/INDEX (from 1)."""
    matches: list[str] = []
    for pipeline, stage in manifest.stages():
        position = pipeline.stages.index(stage) + 1
        if name in (f"{pipeline.name}/{stage.name}", f"{pipeline.name}/{position}") or stage.id.startswith(name):
            matches.append(stage.id)
    if not matches:
        raise UserError(f"--changes {name}: no stage matches (use an id, PIPELINE/TYPE or PIPELINE/INDEX)")
    if len(set(matches)) > 1:
        raise UserError(f"--changes {name}: {len(matches)} stages match; use PIPELINE/INDEX or an id")
    return matches[0]


def list_modules(index: Index, out: Any) -> None:
    for kind in ("stage", "assembler", "source", "runner", "input", "device", "mount"):
        out.write(f"{kind}s:\n")
        for name in index.names(kind):
            info = index.get(kind, name)
            summary = info.summary if info else ""
            out.write(f"  {name:36} {summary}\n")


def result_json(fmt: Any, manifest: Manifest, result: BuildResult) -> dict[str, Any]:
    pipelines: dict[str, Any] = {}
    for stage in result.stages:
        entry = pipelines.setdefault(stage.pipeline, {"id": None, "stages": []})
        entry["stages"].append(stage.as_json())
        entry["id"] = stage.id
    metadata: dict[str, Any] = {}
    for stage in result.stages:
        if stage.metadata:
            metadata.setdefault(stage.pipeline, {})[stage.type] = stage.metadata
    # osbuild's log: what each stage that ran printed, by pipeline.
    log: dict[str, list[dict[str, Any]]] = {}
    for stage in result.stages:
        log.setdefault(stage.pipeline, []).append({"id": stage.id, "type": stage.type, "output": stage.output})
    if result.failure is not None:
        failed = result.failure
        log.setdefault(failed.pipeline, []).append({"id": failed.id, "type": failed.type, "output": failed.log})
    out: dict[str, Any] = {"type": "result", "success": result.success}
    out.update(fmt.result_ids(manifest))
    out["pipelines"] = pipelines
    out["metadata"] = metadata
    out["log"] = log
    if result.exports:
        out["exports"] = result.exports
    if result.failure is not None:
        out["error"] = result.failure.as_json()
    return out


def monitor_for(args: argparse.Namespace) -> Monitor:
    name = args.monitor or ("quiet" if args.json else "log")
    fd = args.monitor_fd if args.monitor_fd is not None else (2 if args.json else 1)
    try:
        stream = os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"--monitor-fd {fd}: {e.strerror}") from e
    return MONITORS[name](stream)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted()


def run(args: argparse.Namespace) -> int:
    if args.manifest is None and not args.list_modules:
        raise UserError("no manifest given (a file, or - for standard input)")
    libdir = args.libdir if args.libdir is not None else default_libdir()
    if not os.path.isdir(libdir):
        raise UserError(f"library directory {libdir}: no such directory")
    index = Index(libdir)
    if args.list_modules:
        list_modules(index, sys.stdout)
        return EXIT_OK
    fmt, manifest = load_manifest(args, index)
    if args.inspect and not args.changes:
        json.dump(fmt.describe(manifest, with_id=True), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if args.changes:
        stage_id = find_stage(manifest, args.changes)
        with ObjectStore(args.store) as store:
            if not store.has(stage_id):
                raise UserError(f"--changes {args.changes}: stage {stage_id} is not in the store {args.store} (build it first)")
            changes = store.changes(stage_id)
        if changes is None:
            raise UserError(f"--changes {args.changes}: the store has no change list for stage {stage_id}")
        json.dump(changes, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return EXIT_OK
    exports = select(manifest, args.export, "--export")
    if args.export and not args.output_directory:
        raise UserError("--export needs --output-directory")
    if args.output_directory and not exports and fmt.BUILDS_WITHOUT_EXPORT:
        exports = [manifest.pipelines[-1]]
    targets = exports or (manifest.pipelines if fmt.BUILDS_WITHOUT_EXPORT else [])
    checkpoints = checkpoint_ids(manifest, args.checkpoint)
    if os.geteuid() != 0:
        # An ordinary user's build runs in a user namespace of its own: start again there,
        # with what this process read from standard input as the new one's.
        if _stdin_text:
            fd = os.memfd_create("osbuild-stdin")
            os.write(fd, _stdin_text[-1].encode())
            os.lseek(fd, 0, os.SEEK_SET)
            os.dup2(fd, 0)
        sandbox.run_rootless([sys.executable, "-m", "osbuild", *sys.argv[1:]])
    if args.output_directory:
        check_writable(args.output_directory)
    monitor = monitor_for(args)
    if not targets:
        monitor.log("nothing to build: a format-2 manifest builds the pipelines --export names, and what they need")
    mounts.enter_private_mount_namespace()
    try:
        with ObjectStore(args.store, max_size=args.cache_max_size) as store:
            builder = Builder(manifest, store, index.libdir, monitor)
            result = builder.build(targets, exports, args.output_directory, checkpoints)
    except BuildError as e:
        if args.json:
            json.dump({"type": "result", "success": False, "error": {"message": str(e)}}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        raise
    if args.json:
        json.dump(result_json(fmt, manifest, result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if not result.success:
        failure = result.failure
        assert failure is not None
        lines = [f"error: stage {failure.type} in pipeline {failure.pipeline} failed "
                 f"(id {failure.id}, exit status {failure.returncode})"]
        if failure.output:
            lines.append("last lines of its output:")
            lines += ["    " + line for line in failure.output[-20:]]
        print("\n".join(lines), file=sys.stderr)
        return EXIT_FAILED
    if not args.json:
        for name, path in result.exports.items():
            monitor.log(f"exported {name} to {path}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return run(args)
    except InvalidManifest as e:
        if args.json:
            json.dump(e.as_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        for line in e.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INVALID
    except (UserError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`osbuild ... | head`): nothing left to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except mounts.MountError as e:
        print(f"error: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED


def main_exit() -> None:
    """Entry point of the installed `osbuild` command."""
    sys.exit(main())
