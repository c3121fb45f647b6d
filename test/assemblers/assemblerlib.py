"""Helpers for assembler tests: a library directory with a test-only stage that makes exact trees.

The stage (org.osbuild.testtree) writes the entries listed in its options with
exact modes, owners, mtimes, extended attributes, symlinks, hard links and
fifos and device nodes, in the order given or reversed, so two builds can make the same tree by
different routes (other inode numbers, creation order, directory order and
xattr order). The library's assemblers are the checkout's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from conftest import REPO, manifest_of, run_osbuild

from osbuild.treediff import sha256_file

TREE_STAGE = "org.osbuild.testtree"

TREE_STAGE_PROGRAM = '''#!/usr/bin/python3
"""Test only: make the listed entries with exact modes, owners, mtimes, xattrs and links."""

import os

import osbuild.api


def create(tree, entry, reverse):
    path = osbuild.api.tree_path(tree, entry["path"])
    kind = entry.get("type", "file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "dir":
        if not os.path.isdir(path):
            os.mkdir(path)
    elif kind == "file":
        with open(path, "wb") as f:
            f.write(entry.get("text", "").encode())
    elif kind == "symlink":
        os.symlink(entry["target"], path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "char":  # a sandbox cannot make device nodes: the engine makes them after the stage
        mtime = entry["mtime"] * 10**9 + entry.get("mtime_nsec", 0) if "mtime" in entry else None
        osbuild.api.device_node(entry["path"], *entry["rdev"], mode=entry.get("mode", 0o644),
                                uid=entry.get("uid", 0), gid=entry.get("gid", 0), mtime_ns=mtime)
        return
    elif kind == "hardlink":
        os.link(osbuild.api.tree_path(tree, entry["target"]), path)
        return
    os.lchown(path, entry.get("uid", 0), entry.get("gid", 0))
    if kind != "symlink":
        os.chmod(path, entry.get("mode", 0o755 if kind == "dir" else 0o644))
    names = sorted(entry.get("xattrs", {}), reverse=reverse)
    for name in names:
        os.setxattr(path, name, bytes.fromhex(entry["xattrs"][name]), follow_symlinks=False)


def main(tree, options):
    entries = options["entries"]
    reverse = options.get("reverse", False)
    ordered = list(reversed(entries)) if reverse else list(entries)
    # Hard links last: their targets must exist.
    for entry in sorted(ordered, key=lambda e: e.get("type") == "hardlink"):
        create(tree, entry, reverse)
    root = options.get("root", {})
    os.chmod(tree, root.get("mode", 0o755))
    # Times last, deepest first: creating an entry changes its directory's mtime.
    timed = [(e["path"], e) for e in entries if "mtime" in e and e.get("type") != "char"]
    if "mtime" in root:
        timed.append(("/", root))
    for path, entry in sorted(timed, key=lambda item: -item[0].count("/") if item[0] != "/" else 1):
        ns = entry["mtime"] * 10**9 + entry.get("mtime_nsec", 0)
        os.utime(osbuild.api.tree_path(tree, path), ns=(ns, ns), follow_symlinks=False)


if __name__ == "__main__":
    osbuild.api.main(main)
'''

TREE_STAGE_META = {
    "summary": "Test only: make exact trees",
    "description": ["Entries with type, mode, uid, gid, mtime, xattrs (hex values), target."],
    "capabilities": ["CAP_MKNOD"],
    "schema": {"type": "object", "additionalProperties": True},
}

# security.capability v2: cap_net_raw in the permitted set, effective.
CAP_NET_RAW = "01000002" + (1 << 13).to_bytes(4, "little").hex() + "00" * 12
OLD = 1600000000

# A small tree with everything an archive or a filesystem must keep.
ENTRIES: list[dict[str, Any]] = [
    {"path": "/etc", "type": "dir", "mtime": OLD},
    {"path": "/etc/hostname", "text": "box\n", "mtime": OLD + 1,
     "xattrs": {"user.zeta": "7a", "user.alpha": "61", "user.middle": "6d"}},
    {"path": "/etc/hostname.hardlink", "type": "hardlink", "target": "/etc/hostname"},
    {"path": "/etc/motd", "text": "hello\n", "mode": 0o600, "mtime": OLD + 2, "mtime_nsec": 500000000},
    {"path": "/tmp", "type": "dir", "mode": 0o1777, "mtime": OLD},
    {"path": "/run", "type": "dir", "mode": 0o755, "mtime": OLD},
    {"path": "/run/initctl", "type": "fifo", "mode": 0o600, "mtime": OLD},
    {"path": "/dev", "type": "dir", "mtime": OLD},
    {"path": "/dev/null", "type": "char", "rdev": [1, 3], "mode": 0o666, "mtime": OLD},
    {"path": "/home", "type": "dir", "mtime": OLD},
    {"path": "/home/user", "type": "dir", "mode": 0o700, "uid": 1000, "gid": 1000, "mtime": OLD},
    {"path": "/home/user/notes.txt", "text": "mine\n", "uid": 1000, "gid": 1000, "mtime": OLD + 3},
    {"path": "/usr", "type": "dir", "mtime": OLD},
    {"path": "/usr/bin", "type": "dir", "mtime": OLD},
    {"path": "/usr/bin/ping", "text": "#!/bin/sh\n", "mode": 0o755, "mtime": OLD + 4,
     "xattrs": {"security.capability": CAP_NET_RAW}},
    {"path": "/usr/bin/su", "text": "#!/bin/sh\n", "mode": 0o4755, "mtime": OLD + 5},
    {"path": "/usr/bin/sh", "type": "symlink", "target": "ping", "mtime": OLD + 6},
]
ROOT = {"mode": 0o755, "mtime": OLD}


def tree_stage(entries: list[dict[str, Any]] | None = None, reverse: bool = False,
               root: dict[str, Any] | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"entries": ENTRIES if entries is None else entries, "root": ROOT if root is None else root}
    if reverse:
        options["reverse"] = True
    return {"name": TREE_STAGE, "options": options}


def make_libdir(lib: Path) -> Path:
    """Fill `lib` as a library directory: the checkout's runners and assemblers, and the test-tree stage."""
    shutil.copytree(REPO / "runners", lib / "runners")
    (lib / "assemblers").symlink_to(REPO / "assemblers")
    (lib / "stages").mkdir()
    program = lib / "stages" / TREE_STAGE
    program.write_text(TREE_STAGE_PROGRAM)
    program.chmod(0o755)
    (lib / "stages" / f"{TREE_STAGE}.meta.json").write_text(json.dumps(TREE_STAGE_META))
    return lib


def assemble(lib: Path, store: Path, out: Path, stages: list[dict[str, Any]], assembler: dict[str, Any],
             source_epoch: int | None = None) -> Path:
    """Build the stages and the assembler; returns the directory of the assembler's output files."""
    manifest = manifest_of(stages, assembler=assembler, source_epoch=source_epoch)
    run_osbuild("--libdir", str(lib), "--store", str(store), "--output-directory", str(out),
                "--export", "assembler", manifest=manifest)
    return out / "assembler"


def export(lib: Path, store: Path, out: Path, stages: list[dict[str, Any]], source_epoch: int | None = None) -> Path:
    """Build the stages and export the tree."""
    manifest = manifest_of(stages, source_epoch=source_epoch)
    run_osbuild("--libdir", str(lib), "--store", str(store), "--output-directory", str(out),
                "--export", "tree", manifest=manifest)
    return out / "tree"


def rejected(lib: Path, store: Path, stages: list[dict[str, Any]], assembler: dict[str, Any]) -> str:
    """A manifest refused before anything runs: exit 2, no traceback; returns stderr."""
    proc = run_osbuild("--libdir", str(lib), "--store", str(store),
                       manifest=manifest_of(stages, assembler=assembler), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def failed(lib: Path, store: Path, stages: list[dict[str, Any]], assembler: dict[str, Any],
           source_epoch: int | None = None) -> str:
    """A build whose assembler fails: exit 1, no traceback; returns the engine's output."""
    proc = run_osbuild("--libdir", str(lib), "--store", str(store),
                       manifest=manifest_of(stages, assembler=assembler, source_epoch=source_epoch), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def sha256(path: Path) -> str:
    return sha256_file(str(path))
