"""What a stage, assembler or runner imports inside the sandbox.

Standard library only, and no syntax newer than Python 3.9: this module runs
under the build root's interpreter, not the engine's.

A stage is a program. The engine writes its arguments as JSON both to the
stage's stdin (the original protocol) and to /run/osbuild/api/arguments:

    {"tree": "/run/osbuild/tree", "options": {...}, "meta": {"id": ..., "source-epoch": ...}}

Assemblers also get "output_dir". A stage may record metadata (for example the
packages it installed) with `metadata()`; the engine keeps it with the stage's
object in the store and reports it in `--json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable, Optional

ARGUMENTS_PATH = "/run/osbuild/api/arguments"
METADATA_PATH = "/run/osbuild/meta"
SOURCES_PATH = "/run/osbuild/sources"


class StageError(Exception):
    """A failure a stage reports to the user in one line, without a traceback."""


def arguments(path: str = ARGUMENTS_PATH) -> dict[str, Any]:
    """The stage's arguments: tree, options, meta, and output_dir for assemblers."""
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def metadata(data: dict[str, Any], path: str = METADATA_PATH) -> None:
    """Record metadata for this stage; later calls update earlier keys."""
    current: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.strip():
            current = json.loads(text)
    except FileNotFoundError:
        pass
    current.update(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(current, f, sort_keys=True)


def source_path(checksum: str, source: str = "org.osbuild.files") -> str:
    """Path of a downloaded file, by checksum, as the engine made it visible to the stage."""
    path = os.path.join(SOURCES_PATH, source, checksum)
    if not os.path.exists(path):
        raise StageError(f"source {checksum} is not available to this stage (is it listed in the manifest's sources?)")
    return path


def tree_path(tree: str, path: str) -> str:
    """Join an absolute path inside the image with the tree, refusing to leave it."""
    joined = os.path.normpath(os.path.join(tree, path.lstrip("/")))
    root = os.path.normpath(tree)
    if joined != root and not joined.startswith(root + os.sep):
        raise StageError(f"path {path!r} leaves the tree")
    return joined


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it first, and fail the stage with a clear line if it fails."""
    print("+ " + " ".join(argv), flush=True)
    kwargs.setdefault("check", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(argv, **kwargs)  # noqa: PLW1510 (check is set above)
    except FileNotFoundError as e:
        raise StageError(f"{argv[0]}: not found in the build root") from e
    except subprocess.CalledProcessError as e:
        raise StageError(f"{' '.join(argv)} failed with exit status {e.returncode}") from e


def chroot_run(tree: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command with the tree as its root, for tools that must see the image as '/'."""
    return run(["chroot", tree, *argv], **kwargs)


def main(stage: Callable[..., Optional[int]]) -> None:
    """Run stage(tree, options) or stage(tree, output_dir, options) and exit with its status.

    A StageError becomes one line on stderr and exit status 1.
    """
    args = arguments()
    try:
        if "output_dir" in args:
            status = stage(args["tree"], args["output_dir"], args.get("options", {}))
        else:
            status = stage(args["tree"], args.get("options", {}))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(status or 0)
