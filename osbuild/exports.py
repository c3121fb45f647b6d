"""Exports land whole or not at all, and an interrupted one leaves nothing that lasts.

An export is copied into `OUTPUT/.NAME.tmp-PID-START` (START: when process PID
started, so a reused PID is not taken for ours), then swapped with `OUTPUT/NAME`
in one atomic exchange; the old content, now under the staging name, is removed.
A build killed at any point leaves at most a staging directory whose process is
gone: every later export into the same directory removes those first.

An export that finds OUTPUT/NAME holding, untouched, the very object it would copy
(`.NAME.osbuild-export` records its id and every file's size and mtime) copies nothing.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re

from osbuild.objectstore import remove_tree

# .NAME.tmp-PID-START (with -old while the old content moves aside), and .NAME.tmp-PID of earlier versions.
_STAGING = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:-(?P<start>\d+))?(?:-old)?$")
RENAME_EXCHANGE = 2
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)


def process_start(pid: int) -> int | None:
    """When process pid started (clock ticks since boot), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    return int(stat[stat.rindex(")") + 2:].split()[19])


def staging_path(output_directory: str, name: str) -> str:
    pid = os.getpid()
    return os.path.join(output_directory, f".{name}.tmp-{pid}-{process_start(pid)}")


def _alive(pid: int, start: int | None) -> bool:
    started = process_start(pid)
    return started is not None and (start is None or started == start)


def remove_stale_exports(output_directory: str) -> list[str]:
    """Remove what interrupted exports left in the directory; an export still running keeps its own."""
    removed = []
    for entry in sorted(os.listdir(output_directory)):
        match = _STAGING.match(entry)
        if match is None:
            continue
        start = int(match["start"]) if match["start"] else None
        if _alive(int(match["pid"]), start):
            continue
        path = os.path.join(output_directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
            removed.append(entry)
    return removed


def replace_atomically(staging: str, destination: str) -> None:
    """Put staging at destination in one step, then remove what was there before."""
    if not os.path.lexists(destination):
        os.rename(staging, destination)
        return
    if _exchange(staging, destination):
        remove_tree(staging)   # now the old content
        return
    # No renameat2 (an old kernel or C library): the old content moves aside first, under a staging name.
    old = staging + "-old"
    os.rename(destination, old)
    os.rename(staging, destination)
    remove_tree(old)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically; False when this system cannot."""
    function = getattr(_libc, "renameat2", None)
    if function is None:
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, f"exchange {a} and {b}: {os.strerror(err)}")


def _record_path(output_directory: str, name: str) -> str:
    return os.path.join(output_directory, f".{name}.osbuild-export")


def _listing(destination: str) -> dict[str, list[int]]:
    """Every entry under an exported directory: its type and mode, size and mtime (ns), by relative path."""
    found: dict[str, list[int]] = {}
    for directory, dirs, files in os.walk(destination):
        for entry in dirs + files:
            path = os.path.join(directory, entry)
            st = os.lstat(path)
            found[os.path.relpath(path, destination)] = [st.st_mode, st.st_size, st.st_mtime_ns]
    return found


def holds(output_directory: str, name: str, object_id: str) -> bool:
    """Whether OUTPUT/NAME is, untouched, what an earlier export of object_id left there.

    The export's record lists every file's type, mode, size and mtime; anything changed,
    added or removed since (an image booted without a snapshot, a file edited) makes a new
    export copy the object again.
    """
    try:
        with open(_record_path(output_directory, name), encoding="utf-8") as f:
            record = json.load(f)
        return bool(record.get("id") == object_id and
                    record.get("files") == _listing(os.path.join(output_directory, name)))
    except (OSError, ValueError, AttributeError):
        return False


def record(output_directory: str, name: str, object_id: str) -> None:
    """Note that OUTPUT/NAME now holds object_id, for holds(); written atomically."""
    path = _record_path(output_directory, name)
    data = {"id": object_id, "files": _listing(os.path.join(output_directory, name))}
    with open(path + ".new", "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(path + ".new", path)


def forget(output_directory: str, name: str) -> None:
    """Drop the record of OUTPUT/NAME before its content changes."""
    try:
        os.unlink(_record_path(output_directory, name))
    except FileNotFoundError:
        pass
