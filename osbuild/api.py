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

import contextlib
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional, Union

ARGUMENTS_PATH = "/run/osbuild/api/arguments"
METADATA_PATH = "/run/osbuild/meta"
SOURCES_PATH = "/run/osbuild/sources"
DEVICE_NODES_PATH = "/run/osbuild/device-nodes"
SELINUX_LABELS_PATH = "/run/osbuild/selinux-labels"
# How many symlinks resolve_path follows before it calls the path a loop (Linux's own limit).
SYMLINK_LIMIT = 40


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


def device_node(path: str, major: int, minor: int, mode: int = 0o666, uid: int = 0, gid: int = 0,
                mtime_ns: Optional[int] = None, requests: str = DEVICE_NODES_PATH) -> None:
    """Ask the engine for a character device node at `path` in the tree, made after the stage succeeds.

    A sandbox cannot make device nodes. The engine makes the ones every root file
    system carries (null, zero, full, random, urandom, tty, console, ptmx) and
    refuses any other, so that a tree never holds a node that reaches host hardware.
    The directory it lands in keeps its times; the node gets mtime_ns if given.
    """
    record: dict[str, Any] = {"path": path, "major": major, "minor": minor, "mode": mode, "uid": uid, "gid": gid}
    if mtime_ns is not None:
        record["mtime_ns"] = mtime_ns
    with open(requests, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def selinux_labels(labels: Iterable[tuple[str, str]], requests: str = SELINUX_LABELS_PATH) -> int:
    """Ask the engine to label paths in the tree (PATH, CONTEXT pairs) after the stage succeeds; returns how many.

    A sandbox cannot write security.selinux; the engine writes it on each path
    itself, a symlink too, as setfiles would, without following links.
    """
    count = 0
    with open(requests, "a", encoding="utf-8") as f:
        for path, label in labels:
            f.write(json.dumps({"path": path, "label": label}) + "\n")
            count += 1
    return count


def source_path(checksum: str, source: str = "org.osbuild.files") -> str:
    """Path of a downloaded file, by checksum, as the engine made it visible to the stage."""
    path = os.path.join(SOURCES_PATH, source, checksum)
    if not os.path.exists(path):
        raise StageError(f"source {checksum} is not available to this stage (is it listed in the manifest's sources?)")
    return path


def tree_path(tree: str, path: str) -> str:
    """The host path of `path`, a path inside the image, refusing any that would leave the tree.

    Refused: a path whose ".." climb out of the tree, and one whose parent
    directory, as the host resolves it, lies outside the tree (a symlink on
    the way points out of it). The last component is not resolved: write with
    `write_file`, which replaces a symlink there instead of following it.
    """
    joined = os.path.normpath(os.path.join(tree, path.lstrip("/")))
    root = os.path.normpath(tree)
    if joined == root:
        return joined
    if not joined.startswith(root + os.sep):
        raise StageError(f"path {path!r} leaves the tree")
    real_root = os.path.realpath(root)
    parent = os.path.realpath(os.path.dirname(joined))
    if parent != real_root and not parent.startswith(real_root + os.sep):
        raise StageError(f"path {path!r} leaves the tree through a symlink")
    return joined


def resolve_in(root: str, path: str) -> str:
    """The host path of `path` inside the tree `root`, its symlinks followed as if root were /.

    Absolute link targets start at root and ".." stops there, as under chroot, so the
    result always lies inside the tree. More than SYMLINK_LIMIT links raise OSError
    (ELOOP). The engine uses this too, for trees it reads on a module's behalf.
    """
    pending = [part for part in path.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = os.path.join(root, *resolved, part)
        if not os.path.islink(candidate):
            resolved.append(part)
            continue
        links += 1
        if links > SYMLINK_LIMIT:
            raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = [part for part in target.split("/") if part not in ("", ".")] + pending
    return os.path.join(root, *resolved)


def resolve_path(tree: str, path: str) -> str:
    """The host path of `path` with its symlinks followed as the image would follow them (resolve_in).

    A path whose own ".." climb out of the tree is refused, as by `tree_path`.
    """
    root = tree_path(tree, "/")
    tree_path(tree, path)
    try:
        return resolve_in(root, path)
    except OSError as e:
        raise StageError(e.strerror) from None


def make_parents(target: str, mode: int = 0o755) -> None:
    """Create the missing parent directories of a host path, with exactly `mode` whatever the umask."""
    missing = []
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        os.mkdir(directory)
        os.chmod(directory, mode)


def write_file(tree: str, path: str, data: Union[str, bytes], mode: Optional[int] = None,
               uid: Optional[int] = None, gid: Optional[int] = None) -> str:
    """Replace the file at `path` in the tree with `data` (text is written as UTF-8); returns its host path.

    The file is written beside the target and renamed over it, so readers never
    see half a file and a symlink at `path` is replaced, never followed. Missing
    parent directories are created (0755). Mode, uid and gid not given are kept
    from the regular file being replaced, or else are 0644, root, root.
    """
    target = tree_path(tree, path)
    if os.path.isdir(target) and not os.path.islink(target):
        raise StageError(f"{path} is a directory")
    current = os.lstat(target) if os.path.isfile(target) and not os.path.islink(target) else None
    if mode is None:
        mode = current.st_mode & 0o7777 if current else 0o644
    if uid is None:
        uid = current.st_uid if current else 0
    if gid is None:
        gid = current.st_gid if current else 0
    make_parents(target)
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.osbuild-new")
    with open(temporary, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.chown(temporary, uid, gid)
    # chmod after chown: chown clears the setuid and setgid bits.
    os.chmod(temporary, mode)
    os.replace(temporary, target)
    return target


@contextlib.contextmanager
def output_file(tree: str, path: str) -> Iterator[Any]:
    """An open binary file that replaces `path` in the tree when the block succeeds.

    For output too large to hold in memory (images, archives): it is written beside
    the target and renamed over it, never through a symlink, and removed if the
    block fails. Missing parents are created (0755); the new file is 0644, root's.
    """
    target = tree_path(tree, path)
    if os.path.isdir(target) and not os.path.islink(target):
        raise StageError(f"{path} is a directory")
    make_parents(target)
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.osbuild-new")
    try:
        with open(temporary, "wb") as f:
            yield f
        os.chown(temporary, 0, 0)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def set_variables(tree: str, path: str, values: dict[str, str], defaults: Sequence[tuple[str, str]] = ()) -> None:
    """Set KEY=VALUE lines in a file of shell variables in the tree, keeping its other lines.

    A key's first line is rewritten in place and its later lines are dropped; keys
    the file lacks are appended. A missing file is created with the values, then
    the `defaults` (KEY, VALUE pairs).
    """
    target = tree_path(tree, path)
    exists = os.path.isfile(target)
    lines = []
    if exists:
        with open(target, encoding="utf-8") as f:
            lines = f.read().splitlines()
    pending = dict(values)
    result = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in values:
            if key in pending:
                result.append(f"{key}={pending.pop(key)}")
            continue
        result.append(line)
    result += [f"{key}={value}" for key, value in pending.items()]
    if not exists:
        result += [f"{key}={value}" for key, value in defaults]
    write_file(tree, path, "\n".join(result) + "\n")


def location(url: str, args: Optional[dict[str, Any]] = None, follow: bool = False) -> str:
    """The host path a format-2 location names: `tree:///PATH`, `mount://NAME/PATH`, `input://NAME/PATH`.

    A location without a scheme is a path in the tree. The path may not leave the
    tree, mount or input it names (`tree_path` rules); with `follow`, its symlinks,
    the last one too, are followed as the image would follow them (`resolve_path`).
    """
    args = arguments() if args is None else args
    scheme, sep, rest = url.partition("://")
    root, path = args["tree"], url
    if sep:
        name, _, path = rest.partition("/")
        path = "/" + path
        if scheme == "tree" and name:
            raise StageError(f"{url}: a tree location has no name (write tree:///PATH)")
        if scheme in ("mount", "input"):
            entry = args.get(scheme + "s", {}).get(name)
            if entry is None:
                raise StageError(f"{url}: the stage has no {scheme} named {name!r}")
            root = entry["path"] if isinstance(entry, dict) else entry
        elif scheme != "tree":
            raise StageError(f"{url}: unknown scheme {scheme!r} (use tree://, mount:// or input://)")
    return resolve_path(root, path) if follow else tree_path(root, path)


def input_files(name: str, args: Optional[dict[str, Any]] = None) -> list[str]:
    """Host paths of the files of the format-2 files input `name`, sorted by their names in the input."""
    args = arguments() if args is None else args
    entry = args.get("inputs", {}).get(name)
    if entry is None:
        raise StageError(f"the stage has no input named {name!r}")
    files = entry.get("data", {}).get("files", {})
    return [tree_path(entry["path"], file) for file in sorted(files)]


def source_file(tree: str, options: dict[str, Any], option: str = "path", name: str = "file") -> str:
    """The one file a stage reads: `options[option]`, a path in the tree (format 1), or else
    the single file of the files input `name` (format 2)."""
    if option in options:
        path = resolve_path(tree, options[option])
        if not os.path.isfile(path):
            raise StageError(f"{options[option]} is not a file in the tree")
        return path
    files = input_files(name)
    if len(files) != 1:
        raise StageError(f"input {name!r} must hold exactly one file, it holds {len(files)}")
    return files[0]


def systemd_config(sections: dict[str, dict[str, Any]], first: Sequence[str] = ("Unit",),
                   last: Sequence[str] = ("Install",)) -> str:
    """The text of a systemd unit or configuration file: `[Section]` blocks of `Key=value` lines.

    Sections in `first` come first and those in `last` last, the others between in
    name order; keys are in name order, so the text does not depend on the order of
    a manifest's keys. A list is one line per item; a boolean is yes or no; an
    `{"key", "value"}` item is a quoted `"KEY=value"` environment assignment, its %
    and quotes escaped. A value with a newline is refused.
    """
    order = {name: i for i, name in enumerate(first)}
    order.update({name: len(first) + 1 + i for i, name in enumerate(last)})
    blocks = []
    for section in sorted(sections, key=lambda name: (order.get(name, len(first)), name)):
        lines = [f"[{section}]"]
        for key in sorted(sections[section]):
            value = sections[section][key]
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool):
                    text = "yes" if item else "no"
                elif isinstance(item, dict):
                    assignment = f"{item['key']}={item['value']}".replace("\\", "\\\\").replace('"', '\\"')
                    text = '"' + assignment.replace("%", "%%") + '"'
                else:
                    text = str(item)
                if "\n" in text:
                    raise StageError(f"{section}.{key}: a value may not contain a newline")
                lines.append(f"{key}={text}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


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
    """Run a command with the tree as its root, for tools that must see the image as '/'.

    Where the tree has /proc and /dev, the command finds a proc and the sandbox's
    devices (null, zero, full, random, urandom, tty) there, not the tree's own files.
    """
    with system_mounts(tree, create=False):
        return run(["chroot", tree, *argv], **kwargs)


@contextlib.contextmanager
def system_mounts(tree: str, create: bool = True) -> Iterator[None]:
    """/proc and /dev mounted in the tree while the block runs, for programs run chrooted into it.

    Maintainer scripts and update-initramfs need both. They are unmounted
    afterwards, also when the block fails. Without `create`, only where the tree
    has the directory; a place that is already a mount point is left as it is.
    """
    mounted: list[str] = []
    try:
        for how, target in ((["-t", "proc", "proc"], "/proc"), (["--rbind", "/dev"], "/dev")):
            where = tree_path(tree, target)
            if create:
                os.makedirs(where, exist_ok=True)
            elif not os.path.isdir(where) or os.path.islink(where) or os.path.ismount(where):
                continue
            try:
                subprocess.run(["mount", *how, where], check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError as e:
                raise StageError(f"mount {target} in the tree: {e.stderr.strip()}") from e
            mounted.append(where)
        yield
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "--recursive", "--lazy", where], check=False)


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
