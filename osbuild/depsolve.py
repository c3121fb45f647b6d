"""What the lock tools (tools/osbuild-depsolve-apt, tools/osbuild-depsolve-dnf) share: reading a
manifest's pipelines, adding the locked files to its sources, writing it out, their errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


class DepsolveError(Exception):
    """Resolving failed: exit status 1."""


class ManifestError(DepsolveError):
    """The manifest asks for something malformed or impossible: exit status 2."""


def is_format_2(manifest: dict[str, Any]) -> bool:
    return manifest.get("version") == "2"


def pipelines(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pipeline of a manifest: format 2's list, or format 1's with its build pipelines."""
    if is_format_2(manifest):
        found = manifest.get("pipelines")
        if not isinstance(found, list) or not all(isinstance(p, dict) and isinstance(p.get("stages", []), list)
                                                  for p in found):
            raise ManifestError("not a format-2 manifest (pipelines is a list of objects with a list of stages)")
        return found
    result = []
    todo = [manifest["pipeline"] if "pipeline" in manifest else manifest]
    while todo:
        pipeline = todo.pop()
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("stages", []), list):
            raise ManifestError("not a format-1 manifest (a pipeline is an object with a list of stages)")
        result.append(pipeline)
        build = pipeline.get("build")
        if isinstance(build, dict):
            todo.append(build["pipeline"] if "pipeline" in build else build)
    return result


def stages(pipeline: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(where, type, options, stage) of each stage of a pipeline; format 2 says `type` where format 1 says `name`."""
    found = []
    for position, stage in enumerate(pipeline.get("stages", [])):
        if not isinstance(stage, dict) or not isinstance(stage.get("options", {}), dict):
            raise ManifestError(f"stage {position}: not an object with a name and an options object")
        name = stage.get("name", stage.get("type"))
        found.append((f"stage {position} ({name})", str(name), stage.get("options", {}), stage))
    return found


def names(options: dict[str, Any], key: str, where: str) -> list[str]:
    """A list of strings from a stage's options (empty when missing), or a ManifestError."""
    value = options.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ManifestError(f"{where}: {key} must be a list of strings")
    return value


def add_sources(manifest: dict[str, Any], urls: dict[str, Any], is_locked: Callable[[Any], bool]) -> dict[str, Any]:
    """The manifest with `urls` (checksum -> URL, or {"url", ...}) in its download sources, replacing the
    files an earlier lock left (those `is_locked` says are of this tool's kind)."""
    if is_format_2(manifest):
        # Format 2 names its download source org.osbuild.curl, and its entries "items".
        curl = manifest.setdefault("sources", {}).setdefault("org.osbuild.curl", {})
        previous = curl.get("items", {})
        # osbuild's curl items are a URL or {"url", "insecure"}: the size format 1 keeps has no place there.
        items = {k: v["url"] if isinstance(v, dict) else v for k, v in urls.items()}
        curl["items"] = {k: v for k, v in sorted({**previous, **items}.items()) if k in items or not is_locked(v)}
        return manifest
    if "pipeline" not in manifest:
        manifest = {"pipeline": manifest}
    files = manifest.setdefault("sources", {}).setdefault("org.osbuild.files", {})
    previous = files.get("urls", {})
    files["urls"] = {k: v for k, v in sorted({**previous, **urls}.items()) if k in urls or not is_locked(v)}
    return manifest


def url_of(entry: Any) -> str:
    """The URL of a sources entry: a URL, or an object with one."""
    return str(entry.get("url", "")) if isinstance(entry, dict) else str(entry)


def run_tool(prog: str, argv_manifest: str, output: str | None, lock: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Read the manifest, lock it with `lock`, write the result (to `output` or standard output); the exit status.

    Errors are one line on standard error: `PROG: error: MANIFEST: ...`.
    """
    def error(message: str, status: int) -> int:
        print(f"{prog}: error: {argv_manifest}: {message}", file=sys.stderr)
        return status

    try:
        with open(argv_manifest, encoding="utf-8") as f:
            manifest = json.load(f)
    except OSError as e:
        return error(e.strerror or str(e), 2)
    except json.JSONDecodeError as e:
        return error(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", 2)
    except UnicodeDecodeError:
        return error("not UTF-8 text", 2)
    if not isinstance(manifest, dict):
        return error("not a manifest (a JSON object)", 2)
    try:
        manifest = lock(manifest)
    except ManifestError as e:
        return error(str(e), 2)
    except DepsolveError as e:
        return error(str(e), 1)
    text = json.dumps(manifest, indent=2) + "\n"
    if output:
        tmp = output + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, output)
        except OSError as e:
            print(f"{prog}: error: {output}: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
