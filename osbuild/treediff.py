"""What differs between two trees: added, removed and changed paths, in a deterministic JSON shape.

    {"added":   {"/etc/hostname": {"type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": 7, "sha256": "..."}},
     "removed": {"/etc/motd": {...}},
     "changed": {"/etc/passwd": {"sha256": ["...", "..."], "size": [800, 850]}}}

Paths are absolute inside the tree ("/" is the tree's root). An entry describes
one path: its type, permission bits, owner, and per type its size and sha256
(files), target (symlinks) or device numbers; extended attributes when it has
any. With `text=True`, added text files carry their "text", and changed text
files carry "lines": {"removed": [...], "added": [...]} so a diff reads as what
happened to a system. Modification times are left out: they say when, not what.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
from typing import Any

TEXT_LIMIT = 64 * 1024
FILE_TYPES = (
    (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
)


def file_type(mode: int) -> str:
    for test, name in FILE_TYPES:
        if test(mode):
            return name
    return "unknown"


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def xattrs(path: str) -> dict[str, str]:
    """Extended attributes of a path (not following symlinks), values as text or hex."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    values = {}
    for name in sorted(names):
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        try:
            text = value.decode("utf-8")
            values[name] = text if text.isprintable() else "hex:" + value.hex()
        except UnicodeDecodeError:
            values[name] = "hex:" + value.hex()
    return values


def describe(path: str, st: os.stat_result | None = None) -> dict[str, Any]:
    """The entry of one path."""
    st = st or os.lstat(path)
    kind = file_type(st.st_mode)
    entry: dict[str, Any] = {"type": kind, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        entry["size"] = st.st_size
        entry["sha256"] = sha256_file(path)
    elif kind == "symlink":
        entry["target"] = os.readlink(path)
    elif kind in ("char", "block"):
        entry["rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    attrs = xattrs(path)
    if attrs:
        entry["xattrs"] = attrs
    return entry


def scan(root: str) -> dict[str, dict[str, Any]]:
    """Every path under root (root itself as "/") with its entry."""
    entries = {"/": describe(root)}
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(directory, root)
        prefix = "/" if rel == "." else "/" + rel + "/"
        for name in dirs + sorted(files):
            entries[prefix + name] = describe(os.path.join(directory, name))
    return entries


def read_text(path: str) -> str | None:
    """A file's content when it is UTF-8 text of reasonable size, else None."""
    try:
        if os.path.getsize(path) > TEXT_LIMIT:
            return None
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "\x00" in text:
        return None
    return text


def line_changes(old: str, new: str) -> dict[str, list[str]]:
    """Lines removed from old and added in new, in file order."""
    a, b = old.splitlines(), new.splitlines()
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += a[i1:i2]
        if tag in ("replace", "insert"):
            added += b[j1:j2]
    return {"removed": removed, "added": added}


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The fields that differ between two entries of one path, as [old, new]."""
    fields = sorted(set(old) | set(new))
    return {f: [old.get(f), new.get(f)] for f in fields if old.get(f) != new.get(f)}


def diff(old_root: str, new_root: str, text: bool = False) -> dict[str, Any]:
    """The difference between two trees."""
    old, new = scan(old_root), scan(new_root)
    result: dict[str, Any] = {"added": {}, "removed": {}, "changed": {}}
    for path in sorted(set(old) | set(new)):
        if path not in old:
            entry = new[path]
            if text and entry["type"] == "file":
                content = read_text(new_root + path)
                if content is not None:
                    entry = dict(entry, text=content)
            result["added"][path] = entry
        elif path not in new:
            result["removed"][path] = old[path]
        else:
            changes = compare(old[path], new[path])
            if not changes:
                continue
            if text and "sha256" in changes and old[path]["type"] == new[path]["type"] == "file":
                before, after = read_text(old_root + path), read_text(new_root + path)
                if before is not None and after is not None:
                    changes["lines"] = line_changes(before, after)
            result["changed"][path] = changes
    return result
