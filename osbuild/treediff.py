"""What differs between two trees: added, removed and changed paths, in a deterministic JSON shape.

    {"added":   {"/etc/hostname": {"type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": 7, "sha256": "..."}},
     "removed": {"/etc/motd": {...}},
     "changed": {"/etc/passwd": {"sha256": ["...", "..."], "size": [800, 850]}}}

Paths are absolute inside the tree ("/" is the tree's root). An entry describes
one path: its type, permission bits, owner, and per type its size and sha256
(files), target (symlinks) or device numbers; extended attributes when it has
any. With `text=True`, added text files carry their "text", and changed text
files carry "lines": {"removed": [...], "added": [...]} so a diff reads as what
happened to a system. Modification times are left out (they say when, not what)
unless asked for, as when finding why two builds are not bit-identical.
"""

from __future__ import annotations

import difflib
import errno
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


def describe(path: str, st: os.stat_result | None = None, times: bool = False) -> dict[str, Any]:
    """The entry of one path; with `times`, its modification time in nanoseconds too."""
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
    if times:
        entry["mtime_ns"] = st.st_mtime_ns
    return entry


def scan(root: str, times: bool = False) -> dict[str, dict[str, Any]]:
    """Every path under root (root itself as "/") with its entry."""
    entries = {"/": describe(root, times=times)}
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(directory, root)
        prefix = "/" if rel == "." else "/" + rel + "/"
        for name in dirs + sorted(files):
            entries[prefix + name] = describe(os.path.join(directory, name), times=times)
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


def diff(old_root: str, new_root: str, text: bool = False, times: bool = False) -> dict[str, Any]:
    """The difference between two trees; `times` compares modification times too."""
    old, new = scan(old_root, times), scan(new_root, times)
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


# -- what one overlay layer changed -----------------------------------------------------

OPAQUE_XATTR = "trusted.overlay.opaque"
# An overlay mounted in a user namespace (a build without root) keeps its marks here instead.
USER_OPAQUE_XATTR = "user.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    for name in (OPAQUE_XATTR, USER_OPAQUE_XATTR):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def _light_entry(path: str, st: os.stat_result) -> dict[str, Any]:
    """An entry without content hashes: type, mode, owner, size or target, xattrs."""
    kind = file_type(st.st_mode)
    entry: dict[str, Any] = {"type": kind, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid, "gid": st.st_gid}
    if kind == "file":
        entry["size"] = st.st_size
    elif kind == "symlink":
        entry["target"] = os.readlink(path)
    elif kind in ("char", "block"):
        entry["rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    attrs = {k: v for k, v in xattrs(path).items() if not k.startswith(("trusted.overlay.", "user.overlay."))}
    if attrs:
        entry["xattrs"] = attrs
    return entry


class LowerView:
    """Path lookups in a stack of overlay layers (top-most first), as the merged tree shows them."""

    def __init__(self, layers: list[str]) -> None:
        self.layers = layers

    def find(self, rel: str) -> str | None:
        """The real path of `rel` (relative, no leading slash) in the merged view, or None."""
        parts = rel.split("/") if rel else []
        for layer in self.layers:
            path = layer
            hidden = False
            for depth, part in enumerate(parts):
                path = os.path.join(path, part)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    break
                if is_whiteout(st):
                    return None
                if depth == len(parts) - 1:
                    return path
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if is_opaque(path):
                    hidden = True
            else:
                return layer if not parts else None
            if hidden:
                return None
        return None

    def walk(self, rel: str) -> list[str]:
        """Every path below directory `rel` in the merged view (relative paths)."""
        found: list[str] = []
        directory = self.find(rel)
        if directory is None or not os.path.isdir(directory):
            return found
        names: set[str] = set()
        for layer in self.layers:
            path = os.path.join(layer, rel)
            if os.path.isdir(path) and not os.path.islink(path):
                names.update(os.listdir(path))
                if is_opaque(path):
                    break
        for name in sorted(names):
            child = f"{rel}/{name}" if rel else name
            real = self.find(child)
            if real is None:
                continue
            found.append(child)
            if os.path.isdir(real) and not os.path.islink(real):
                found += self.walk(child)
        return found


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """Where a file holds data, as (start, end) byte ranges; its holes are left out.

    A filesystem without its own SEEK_DATA gives the whole file as one range."""
    ranges = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:   # nothing but a hole from offset on
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        ranges.append((start, end))
        offset = end
    return ranges


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def same_content(a: str, b: str) -> bool:
    """Whether two files hold the same bytes. Only the ranges where either holds data are read (a hole
    reads as zeroes), so two sparse disk images cost what they hold, not their size."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        size = os.fstat(fa.fileno()).st_size
        if os.fstat(fb.fileno()).st_size != size:
            return False
        for start, end in _union(data_ranges(fa.fileno(), size) + data_ranges(fb.fileno(), size)):
            offset = start
            while offset < end:
                length = min(1 << 20, end - offset)
                if os.pread(fa.fileno(), length, offset) != os.pread(fb.fileno(), length, offset):
                    return False
                offset += length
    return True


def layer_diff(upper: str, lowers: list[str], id_shift: int = 0) -> dict[str, Any]:
    """What an overlay upper dir changed over its lower layers, in the shape of diff() (no hashes).

    Only the upper dir and the lower paths it touches are read, so the cost grows
    with what the stage changed, not with the size of the tree. Owners are given as
    the tree has them inside: id_shift is what the reader's ids add to those (1 in a
    build without root, whose modules' root is the engine's id 1).
    """
    view = LowerView(lowers)

    def light_entry(path: str, st: os.stat_result) -> dict[str, Any]:
        entry = _light_entry(path, st)
        entry["uid"] -= id_shift
        entry["gid"] -= id_shift
        return entry

    result: dict[str, Any] = {"added": {}, "removed": {}, "changed": {}}

    def removed_below(rel: str) -> None:
        """Lower paths under `rel` that the upper dir, which replaces it whole, does not have."""
        for child in view.walk(rel):
            if os.path.lexists(os.path.join(upper, child)) and not is_whiteout(os.lstat(os.path.join(upper, child))):
                continue
            real = view.find(child)
            if real is not None:
                result["removed"]["/" + child] = light_entry(real, os.lstat(real))

    for directory, dirs, files in os.walk(upper):
        dirs.sort()
        rel_dir = os.path.relpath(directory, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        if is_opaque(directory) and view.find(rel_dir) is not None:
            removed_below(rel_dir)
        for name in sorted(dirs + files):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            path = os.path.join(directory, name)
            st = os.lstat(path)
            lower = view.find(rel)
            if is_whiteout(st):
                if lower is not None:
                    result["removed"]["/" + rel] = light_entry(lower, os.lstat(lower))
                    if os.path.isdir(lower) and not os.path.islink(lower):
                        removed_below(rel)
                continue
            entry = light_entry(path, st)
            if lower is None:
                result["added"]["/" + rel] = entry
                continue
            old = light_entry(lower, os.lstat(lower))
            changes = compare(old, entry)
            # Overlay copies a file up only when it is written or its metadata changes. One whose metadata
            # did not change was written (or only touched): its bytes tell, not its mtime, which the source
            # epoch clamps back to the lower file's (a disk that sfdisk or mkfs rewrote keeps size and mode).
            if not changes and entry["type"] == "file" and not same_content(lower, path):
                changes["content"] = ["old", "new"]
                changes["size"] = [st.st_size, st.st_size]
            if changes:
                result["changed"]["/" + rel] = changes
    for section in result.values():
        for key in sorted(section):
            section[key] = section.pop(key)
    return result


def summary(changes: dict[str, Any]) -> dict[str, int]:
    """Counts of added, removed and changed paths, and the bytes of files added or changed."""
    size = 0
    for entry in changes["added"].values():
        size += entry.get("size", 0)
    for fields in changes["changed"].values():
        new = fields.get("size", [0, 0])[1] if "size" in fields else 0
        size += new or 0
    return {"added": len(changes["added"]), "removed": len(changes["removed"]),
            "changed": len(changes["changed"]), "bytes": size}
