"""Filesystem images made from a tree without mounting anything: ext4, xfs, fat and btrfs.

Assemblers and stages import this inside the sandbox, so it is standard library
only and Python 3.9 syntax. Both functions write the filesystem into a regular
file, either as the whole file (`offset=0`) or inside a bigger disk image at a
byte offset (a partition), with no loop device and no mount.

    make_ext4(tree, image, size=..., uuid=..., label=None, offset=0, source_epoch=None)
    make_xfs(tree, image, size=..., uuid=..., label=None, offset=0, source_epoch=None)

Failures raise osbuild.api.StageError with one line a user can act on.

What each keeps and how reproducible it is (measured with e2fsprogs 1.47.0 and
xfsprogs 6.1.0, Debian 12):

ext4 (`mke2fs -d TREE`): keeps contents, modes, owners, mtimes (whole seconds),
symlinks, hard links, device nodes, fifos, sockets and extended attributes
(security.capability included). mke2fs gives the root directory mode 0755;
the tree's root mode is written afterwards. /lost+found always exists (fsck
needs it): mode 0700 root:root unless the tree has its own, whose mode, owner
and contents are kept. Determinism: the filesystem UUID, the directory hash
seed (-E hash_seed=UUID) and the filesystem's own times (E2FSPROGS_FAKE_TIME)
are pinned. Even so, mke2fs 1.47.0 copies (1) each file's atime and ctime
verbatim, so two builds differ even from the same tree (mke2fs reading the
files moves their atimes) and always from two trees built at different times,
and (2) extended attributes in the order the source filesystem lists them,
which on ext4 is the order they were set in. So after mke2fs, one debugfs pass
(inodes addressed by number: by path, debugfs is quadratic in big directories)
rewrites out-of-order attributes sorted by name and, with a source epoch, sets
every inode's atime and ctime to the epoch and clamps mtimes to it (e2fsprogs
1.47.1 and newer clamp times themselves from SOURCE_DATE_EPOCH; then only the
attributes and the root are fixed). Measured: with a source epoch, the same
bytes from the same tree built twice, and from two stores that built it in
different orders (other inode numbers, ctimes, directory and attribute order);
a 56,000-file, 800 MB tree takes about 40 s in mke2fs and 1.5 s in the pass.
Without a source epoch the images differ in times.

xfs (`mkfs.xfs -p PROTOFILE`, generated from the tree; xfsprogs 6.1 has no
populate-from-directory option): keeps contents, modes (setuid, setgid; the
sticky bit is written afterwards with xfs_db), owners, symlinks, device nodes
and fifos. Lost: extended attributes (security.capability, ACLs, SELinux
labels), hard links (each name becomes its own copy of the file), sockets
(skipped), and times (mkfs sets every inode's time to now; mtimes are written
back from the tree with xfs_db, nanoseconds included). A protofile cannot name
a file whose name contains whitespace or starts with ':', nor one named '$';
such a tree is refused with the path named. Determinism: with a source epoch
(atime, ctime and crtime set to it, mtimes clamped to it), two builds from the
same tree or from two copies of it are byte-identical (xfsprogs 6.1 leaves
inode generation numbers 0; only times differ between two mkfs runs, including
those of the realtime bitmap and summary inodes, which are pinned too). The
same 56,000-file tree takes about 7 s in mkfs.xfs and 13 s in xfs_db. Without
an epoch, ctime and crtime are the build time. xfsprogs 6.1 refuses
filesystems smaller than 300 MiB.

btrfs (`mkfs.btrfs --rootdir TREE`, in a scratch file spliced in): keeps contents,
modes, owners, mtimes (whole seconds), symlinks, hard links, device nodes, fifos and
extended attributes; the root directory is 0755 root:root. Not deterministic: the
filesystem UUID and (btrfs-progs 6.5.3 and newer) the device UUID are pinned, but no
release pins the chunk tree UUID, the top subvolume's UUID, the root's times (the
clock) or the files' atimes and ctimes (copied from the tree), and inode numbers follow
the tree's st_ino (6.2) or readdir order (6.14). docs/modules.md has the measurements.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import stat
import subprocess
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

from osbuild.api import StageError, location, resolve_path

SECTOR = 512
EXT4_LABEL_MAX = 16
XFS_LABEL_MAX = 12
# btrfs keeps 256 bytes for the label, its NUL included.
BTRFS_LABEL_MAX = 255
BTRFS_METADATA_PROFILES = ("single", "dup")
FAT_LABEL_MAX = 11
# Heads and sectors per track mkfs.fat writes unless told: a geometry it would otherwise guess.
FAT_GEOMETRY = (64, 32)
# e2fsprogs from this version on clamps file times to SOURCE_DATE_EPOCH itself.
E2FSPROGS_CLAMPS_TIMES = (1, 47, 1)
# XFS "bigtime" timestamps count nanoseconds from this many seconds before 1970.
XFS_BIGTIME_OFFSET = 2**31
NS = 10**9
_PROTO_UNSAFE = re.compile(r"\s")


def source_epoch() -> Optional[int]:
    """SOURCE_DATE_EPOCH from the environment (the engine sets it from the pipeline), or None."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise StageError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None
    if epoch < 0:
        raise StageError(f"SOURCE_DATE_EPOCH={value!r} is negative")
    return epoch


# -- where a disk stage writes ----------------------------------------------------------


def stage_target(tree: str, options: dict[str, Any], args: dict[str, Any]) -> tuple[str, int, int]:
    """Where a format-2 disk stage writes, as (path, byte offset, byte size).

    With a `device` (an org.osbuild.loopback the engine attached), all of it:
    osbuild's way. Without one, the file `filename` in the tree from sector
    `start` (default 0) for `size` sectors (default: to the end of the file),
    the loopback device's own options, so that no loop device is needed.
    """
    device = args.get("devices", {}).get("device")
    if device is not None:
        with open(device["path"], "rb") as f:
            return device["path"], 0, f.seek(0, os.SEEK_END)
    if "filename" not in options:
        raise StageError("give the disk file as the option `filename`, or a `device`")
    path = resolve_path(tree, options["filename"])
    if not os.path.isfile(path):
        raise StageError(f"{options['filename']} is not a file in the tree (make it with org.osbuild.truncate)")
    end = os.stat(path).st_size
    offset = options.get("start", 0) * SECTOR
    size = options["size"] * SECTOR if "size" in options else end - offset
    if size <= 0 or offset + size > end:
        raise StageError(f"{options['filename']} has {end // SECTOR} sectors: sectors {offset // SECTOR} to "
                         f"{(offset + size) // SECTOR} are not in it")
    return path, offset, size


def partition_uuid(table_uuid: str, number: int) -> str:
    """The GUID of a GPT partition the manifest gives none: derived from the table's id and the partition's number."""
    return str(uuidlib.uuid5(uuidlib.UUID(table_uuid), f"partition-{number}"))


def stage_content(options: dict[str, Any], args: dict[str, Any]) -> Optional[str]:
    """The directory named by the option `from` (input://NAME/PATH, tree:///PATH), or None for an empty filesystem."""
    if "from" not in options:
        return None
    path = location(options["from"], args, follow=True)
    if not os.path.isdir(path):
        raise StageError(f"from: {options['from']} is not a directory")
    return path


# -- shared checks and helpers ---------------------------------------------------------


def _checked_uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise StageError(f"filesystem UUID {value!r} is not a UUID (like 9c6ae55b-cf88-45b8-84e8-64990759f39d)") from None


def _check_geometry(tree: Optional[str], size: int, offset: int) -> None:
    if tree is not None and not os.path.isdir(tree):
        raise StageError(f"tree {tree} is not a directory")
    if not isinstance(size, int) or size <= 0 or size % SECTOR:
        raise StageError(f"filesystem size {size!r} must be a positive multiple of {SECTOR} bytes")
    if not isinstance(offset, int) or offset < 0 or offset % SECTOR:
        raise StageError(f"offset {offset!r} must be a non-negative multiple of {SECTOR} bytes")


def _check_label(label: Optional[str], limit: int, what: str) -> None:
    if label is None:
        return
    if not label or len(label.encode("utf-8")) > limit:
        raise StageError(f"{what} label {label!r} must be 1 to {limit} bytes")


def _prepare_image(image: str, size: int, offset: int, whole: Optional[bool] = None) -> None:
    """A whole-filesystem image is made anew; a disk image is only grown to hold the filesystem.

    A block device (format 2's loop devices) is never resized: it must hold the filesystem.
    `whole` defaults to offset == 0.
    """
    if os.path.exists(image) and stat.S_ISBLK(os.stat(image).st_mode):
        with open(image, "rb") as f:
            end = f.seek(0, os.SEEK_END)
        if end < offset + size:
            raise StageError(f"device {image} has {end} bytes, too few for {size} bytes at offset {offset}")
        return
    if offset == 0 if whole is None else whole:
        with open(image, "wb") as f:
            f.truncate(size)
        return
    with open(image, "ab") as f:
        if f.seek(0, os.SEEK_END) < offset + size:
            f.truncate(offset + size)


@contextlib.contextmanager
def _filesystem_file(image: str, size: int, offset: int, whole: Optional[bool], kind: str) -> Iterator[str]:
    """The file or device a mkfs that cannot write at an offset makes its filesystem in.

    The image itself when the filesystem is all of it (a device, or a whole-filesystem
    file, made anew); otherwise a sparse scratch file of exactly `size` bytes beside
    it, whose data is spliced into the image at `offset` once the caller is done.
    """
    device = os.path.exists(image) and stat.S_ISBLK(os.stat(image).st_mode)
    if (device and offset == 0) or (not device and (offset == 0 if whole is None else whole)):
        _prepare_image(image, size, 0)
        yield image
        return
    fd, target = tempfile.mkstemp(prefix=f".osbuild-{kind}-", dir=_scratch_dir(image))
    try:
        os.ftruncate(fd, size)
        os.close(fd)
        yield target
        _prepare_image(image, size, offset, whole=False)
        _splice(target, image, offset)
    finally:
        os.unlink(target)


def _run(argv: list[str], *, env: Optional[dict[str, str]] = None, stdin: Optional[str] = None,
         tool_errors: bool = False) -> str:
    """Run a tool and return its output as text; fail with its last error line."""
    return _run_bytes(argv, env=env, stdin=stdin, tool_errors=tool_errors).decode("utf-8", "replace")


def _run_bytes(argv: list[str], *, env: Optional[dict[str, str]] = None, stdin: Optional[str] = None,
               tool_errors: bool = False) -> bytes:
    """Run a tool, show its errors if it fails, and fail with its last error line.

    File names travel as bytes both ways (surrogate escapes of undecodable
    names are kept). With tool_errors, a tool that reports failed commands on
    stderr but exits 0 (debugfs) fails too.
    """
    print("+ " + " ".join(argv), flush=True)
    data = stdin.encode("utf-8", "surrogateescape") if stdin is not None else None
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, env=env, check=False)
    except FileNotFoundError:
        raise StageError(f"{argv[0]}: not found in the build root") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    errors = [line for line in stderr.splitlines() if line.strip() and not _is_banner(argv[0], line)]
    if proc.returncode != 0 or (tool_errors and errors):
        print(proc.stdout[-20000:].decode("utf-8", "replace"), end="", flush=True)
        print(stderr, end="", flush=True)
        reason = errors[-1].strip() if errors else f"exit status {proc.returncode}"
        raise StageError(f"{os.path.basename(argv[0])} failed: {reason}")
    return proc.stdout


def _is_banner(tool: str, line: str) -> bool:
    """The version line e2fsprogs tools print on stderr before any work."""
    name = os.path.basename(tool)
    return name in ("debugfs", "mke2fs") and line.startswith(name + " ") and "(" in line


def _walk(tree: str) -> list[tuple[str, os.stat_result]]:
    """Every path below the tree ('/'-rooted, depth first, names sorted) with its lstat."""
    entries: list[tuple[str, os.stat_result]] = []

    def visit(directory: str, prefix: str) -> None:
        for name in sorted(os.listdir(directory)):
            full = os.path.join(directory, name)
            st = os.lstat(full)
            entries.append((prefix + name, st))
            if stat.S_ISDIR(st.st_mode):
                visit(full, prefix + name + "/")

    visit(tree, "/")
    return entries


def _clamp_ns(mtime_ns: int, epoch: Optional[int]) -> int:
    if epoch is None:
        return mtime_ns
    return min(mtime_ns, epoch * NS)


# -- ext4 ------------------------------------------------------------------------------


def make_ext4(tree: Optional[str], image: str, *, size: int, uuid: str, label: Optional[str] = None, offset: int = 0,
              source_epoch: Optional[int] = None, whole: Optional[bool] = None, features: tuple[str, ...] = (),
              extended: tuple[str, ...] = ()) -> None:
    """Make an ext4 filesystem of `size` bytes holding the tree, in `image` at byte `offset`.

    With offset 0 the image file is (re)created as exactly the filesystem; with
    an offset (or `whole=False`) the image must be a disk image whose bytes from
    `offset` on are zeroes (a fresh sparse file): it is grown if it is shorter
    than offset+size and nothing outside the filesystem's range is written. A
    block device is written in place. Without a tree the filesystem is empty.
    `features` (mke2fs -O) and `extended` (-E) add to what is pinned here.
    """
    fs_uuid = _checked_uuid(uuid)
    _check_geometry(tree, size, offset)
    _check_label(label, EXT4_LABEL_MAX, "ext4")
    _prepare_image(image, size, offset, whole)
    env = dict(os.environ)
    if source_epoch is not None:
        env["E2FSPROGS_FAKE_TIME"] = str(source_epoch)
        env["SOURCE_DATE_EPOCH"] = str(source_epoch)
    options = [f"hash_seed={fs_uuid}", *extended]
    argv = ["mke2fs", "-F", "-t", "ext4", "-U", fs_uuid]
    if tree is not None:
        root = os.stat(tree)
        options.append(f"root_owner={root.st_uid}:{root.st_gid}")
        argv += ["-d", tree]
    if offset:
        options.append(f"offset={offset}")
    argv += ["-E", ",".join(options)]
    if features:
        argv += ["-O", ",".join(features)]
    if label is not None:
        argv += ["-L", label]
    argv += [image, f"{size // 1024}k"]
    if tree is None:
        print(_run(argv, env=env), end="", flush=True)
        return
    # What the fixup pass needs from the tree is read while mke2fs copies it: the second core's work.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        surveyed = pool.submit(_ext4_survey, tree, env)
        print(_run(argv, env=env), end="", flush=True)
        survey = surveyed.result()
    device = f"{image}?offset={offset}" if offset else image
    inodes = _ext4_inodes(device, survey.entries, env)
    with tempfile.TemporaryDirectory(prefix="osbuild-ext4-") as scratch:
        commands = _ext4_fixup_commands(tree, survey, inodes, source_epoch, scratch)
        _run(["debugfs", "-w", "-f", "-", device], env=env, stdin="".join(commands), tool_errors=True)


class _Ext4Survey(NamedTuple):
    """What the fixup pass needs from the tree: every path with its lstat, the extended attribute names of
    those paths that list them out of order, and whether the build root's mke2fs clamps times itself."""

    entries: list[tuple[str, os.stat_result]]
    unsorted: dict[str, list[str]]
    clamps: bool


def _ext4_survey(tree: str, env: dict[str, str]) -> _Ext4Survey:
    entries = _walk(tree)
    unsorted = {}
    for path in ["/", *(path for path, _ in entries)]:
        try:
            names = os.listxattr(os.path.join(tree, path.lstrip("/")), follow_symlinks=False)
        except OSError:
            continue
        if names != sorted(names):
            unsorted[path] = names
    return _Ext4Survey(entries, unsorted, _e2fsprogs_version(env) >= E2FSPROGS_CLAMPS_TIMES)


def _e2fsprogs_version(env: dict[str, str]) -> tuple[int, ...]:
    proc = subprocess.run(["mke2fs", "-V"], capture_output=True, text=True, env=env, check=False)
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", proc.stderr + proc.stdout)
    if not match:
        return (0,)
    return tuple(int(part or 0) for part in match.groups())


def _debugfs_quote(path: str) -> str:
    if "\n" in path:
        raise StageError(f"name {path!r} contains a newline, which debugfs cannot address")
    return '"' + path.replace('"', '""') + '"'


def _ext4_inodes(device: str, entries: list[tuple[str, os.stat_result]], env: dict[str, str]) -> dict[str, int]:
    """The inode number of every path, from one debugfs run that lists each directory.

    Later commands address inodes by number: debugfs resolves a path by
    scanning each directory on the way, which makes one command per file in
    big directories quadratic (minutes for a Debian tree instead of a second).
    """
    directories = ["/"] + [path for path, st in entries if stat.S_ISDIR(st.st_mode)]
    script = "".join(f"ls -p {_debugfs_quote(directory)}\n" for directory in directories)
    output = _run_bytes(["debugfs", "-f", "-", device], env=env, stdin=script, tool_errors=True)
    inodes = {"/": 2}
    index = -1
    for line in output.split(b"\n"):
        if line.startswith(b"debugfs: "):
            index += 1
            continue
        # /INODE/MODE/UID/GID/NAME/SIZE/ ; a name cannot hold '/' (nor, here, a newline).
        fields = line.split(b"/")
        if len(fields) < 8 or fields[1] == b"0" or fields[5] in (b".", b".."):
            continue
        name = fields[5].decode("utf-8", "surrogateescape")
        inodes[directories[index].rstrip("/") + "/" + name] = int(fields[1])
    missing = [path for path, _ in entries if path not in inodes]
    if missing:
        raise StageError(f"mke2fs did not copy {missing[0]!r} into the filesystem ({len(missing)} paths missing)")
    return inodes


def _ext4_fixup_commands(tree: str, survey: _Ext4Survey, inodes: dict[str, int], epoch: Optional[int],
                         scratch: str) -> list[str]:
    """debugfs commands that finish what mke2fs -d leaves undone.

    The root gets the tree's mode and mtime; extended attributes are rewritten
    in sorted order where the tree lists them otherwise (mke2fs keeps the
    order the source filesystem lists them in, which depends on the order they
    were set in); with an epoch, every inode's times are pinned to it.
    """
    root = os.stat(tree)
    root_mtime = _clamp_ns(root.st_mtime_ns, epoch) // NS
    commands = [f"sif <2> mode 0{stat.S_IFDIR | stat.S_IMODE(root.st_mode):o}\n", f"sif <2> mtime @{root_mtime}\n"]
    commands += _ext4_xattr_commands(tree, "/", 2, survey.unsorted, scratch)
    if epoch is not None:
        commands += [f"sif <2> atime @{epoch}\n", f"sif <2> ctime @{epoch}\n"]
    clamp_to = epoch if epoch is not None and not survey.clamps else None
    for path, st in survey.entries:
        inode = inodes[path]
        commands += _ext4_xattr_commands(tree, path, inode, survey.unsorted, scratch)
        if clamp_to is not None:
            commands += [f"sif <{inode}> atime @{clamp_to}\n", f"sif <{inode}> ctime @{clamp_to}\n"]
            if st.st_mtime > clamp_to:
                commands.append(f"sif <{inode}> mtime @{clamp_to}\n")
    return commands


def _ext4_xattr_commands(tree: str, path: str, inode: int, unsorted: dict[str, list[str]],
                         scratch: str) -> list[str]:
    """Remove and set again, sorted by name, the extended attributes of a path listed out of order."""
    names = unsorted.get(path)
    if names is None:
        return []
    full = os.path.join(tree, path.lstrip("/"))
    commands = ["ea_rm " + " ".join([f"<{inode}>", *(_debugfs_quote(name) for name in names)]) + "\n"]
    for name in sorted(names):
        fd, value_file = tempfile.mkstemp(dir=scratch)
        with os.fdopen(fd, "wb") as f:
            f.write(os.getxattr(full, name, follow_symlinks=False))
        commands.append(f"ea_set -f {_debugfs_quote(value_file)} <{inode}> {_debugfs_quote(name)}\n")
    return commands


# -- fat ------------------------------------------------------------------------------


def make_fat(tree: Optional[str], image: str, *, size: int, volid: str, label: Optional[str] = None, offset: int = 0,
             fat_size: Optional[int] = None, geometry: tuple[int, int] = FAT_GEOMETRY, hidden: int = 0,
             source_epoch: Optional[int] = None) -> None:
    """Make a FAT filesystem of `size` bytes holding the tree's files, in `image` at byte `offset`.

    mkfs.fat and mtools work on a scratch file of exactly `size` bytes, which is
    then spliced in: mkfs.fat sizes its clusters and guesses a geometry from the
    whole file it is given, so a filesystem made at an offset of a bigger disk
    would depend on the disk's size. The image contract is make_ext4's with an
    offset (nothing outside the filesystem's range is written); a block device
    is written in place.
    """
    _check_geometry(tree, size, offset)
    _check_label(label, FAT_LABEL_MAX, "fat")
    if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", volid):
        raise StageError(f"fat volume id {volid!r} must be 1 to 8 hex digits (like 7B7795E7)")
    entries = _fat_entries(tree) if tree is not None else []
    env = dict(os.environ, TZ="UTC", MTOOLS_SKIP_CHECK="1")
    if source_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(source_epoch)
    # --invariant pins what mkfs.fat would take from the clock (the label entry's time).
    argv = ["mkfs.fat", "--invariant", "-i", volid.upper(), "-g", f"{geometry[0]}/{geometry[1]}", "-h", str(hidden)]
    if fat_size is not None:
        argv += ["-F", str(fat_size)]
    if label is not None:
        argv += ["-n", label]
    fd, scratch = tempfile.mkstemp(prefix=".osbuild-fat-", dir=_scratch_dir(image))
    try:
        os.ftruncate(fd, size)
        os.close(fd)
        print(_run([*argv, scratch], env=env), end="", flush=True)
        _fat_fill(tree, entries, scratch, env, source_epoch)
        _prepare_image(image, size, offset, whole=False)
        _splice(scratch, image, offset)
    finally:
        os.unlink(scratch)


def _scratch_dir(image: str) -> str:
    """Beside a disk file (the same filesystem, no memory); elsewhere for a device."""
    if os.path.exists(image) and stat.S_ISBLK(os.stat(image).st_mode):
        return "/var/tmp"
    return os.path.dirname(os.path.abspath(image))


def _fat_entries(tree: str) -> list[tuple[str, os.stat_result]]:
    """The tree's directories and files; what FAT cannot hold is refused with its path."""
    entries = _walk(tree)
    seen: dict[str, str] = {}
    for path, st in entries:
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise StageError(f"fat: {path} is neither a file nor a directory, which FAT cannot hold")
        folded = path.casefold()
        if folded in seen:
            raise StageError(f"fat: {seen[folded]} and {path} differ only in case, which FAT cannot tell apart")
        seen[folded] = path
    return entries


def _fat_fill(tree: Optional[str], entries: list[tuple[str, os.stat_result]], image: str, env: dict[str, str],
              epoch: Optional[int]) -> None:
    """Directories with one mmd, then each directory's files with one mcopy, all in sorted order.

    mtools dates entries SOURCE_DATE_EPOCH when it is set (in UTC: FAT times are
    local); without it, files keep their mtimes (-m) and directories get now.
    """
    if tree is None:
        return
    directories = [path for path, st in entries if stat.S_ISDIR(st.st_mode)]
    if directories:
        _run(["mmd", "-i", image, *("::" + path for path in directories)], env=env)
    files: dict[str, list[str]] = {}
    for path, st in entries:
        if stat.S_ISREG(st.st_mode):
            files.setdefault(os.path.dirname(path), []).append(os.path.join(tree, path.lstrip("/")))
    keep_times = [] if epoch is not None else ["-m"]
    for directory in ["/", *directories]:
        if directory in files:
            _run(["mcopy", "-i", image, *keep_times, *files[directory], "::" + directory.rstrip("/") + "/"], env=env)


# -- xfs -------------------------------------------------------------------------------


def make_xfs(tree: Optional[str], image: str, *, size: int, uuid: str, label: Optional[str] = None, offset: int = 0,
             source_epoch: Optional[int] = None, whole: Optional[bool] = None, agcount: Optional[int] = None) -> None:
    """Make an xfs filesystem of `size` bytes holding the tree, in `image` at byte `offset`.

    The same contract as make_ext4 for the image file; see the module
    docstring for what xfs cannot keep (extended attributes, hard links).
    Without a tree the filesystem is empty (its root 0755, dated the epoch).
    """
    fs_uuid = _checked_uuid(uuid)
    _check_geometry(tree, size, offset)
    _check_label(label, XFS_LABEL_MAX, "xfs")
    with tempfile.TemporaryDirectory(prefix="osbuild-xfs-") as scratch:
        if tree is None:
            tree = os.path.join(scratch, "empty")
            os.mkdir(tree, 0o755)
            os.utime(tree, (source_epoch or 0, source_epoch or 0))
        entries = _walk(tree)
        protofile = os.path.join(scratch, "protofile")
        with open(protofile, "wb") as f:
            f.write(_protofile(tree, entries).encode("utf-8", "surrogateescape"))
        with _filesystem_file(image, size, offset, whole, "xfs") as target:
            argv = ["mkfs.xfs", "-f", "-m", f"uuid={fs_uuid}"]
            if label is not None:
                argv += ["-L", label]
            if agcount is not None:
                argv += ["-d", f"agcount={agcount}"]
            print(_run([*argv, "-p", protofile, target]), end="", flush=True)
            _xfs_fix_inodes(tree, entries, target, source_epoch)


def _proto_token(token: str, path: str, what: str) -> str:
    if not token or _PROTO_UNSAFE.search(token) or token.startswith(":") or token == "$":
        raise StageError(f"xfs: cannot put {path!r} in a protofile: its {what} {token!r} has whitespace, "
                         "starts with ':' or is '$' (use ext4 for this tree)")
    return token


def _proto_mode(st: os.stat_result) -> str:
    kinds = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
             stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
    mode = st.st_mode
    return (kinds[stat.S_IFMT(mode)] + ("u" if mode & stat.S_ISUID else "-")
            + ("g" if mode & stat.S_ISGID else "-") + f"{mode & 0o777:03o}")


def _protofile(tree: str, entries: list[tuple[str, os.stat_result]]) -> str:
    """The mkfs.xfs protofile that recreates the tree (sockets left out, hard links as copies)."""
    root = os.stat(tree)
    lines = ["osbuild", "0 0", f"{_proto_mode(root)} {root.st_uid} {root.st_gid}"]
    open_dirs = ["/"]
    skipped: list[str] = []
    links = 0
    for path, st in entries:
        parent = os.path.dirname(path)
        while open_dirs[-1] != parent:
            open_dirs.pop()
            lines.append("$")
        if stat.S_ISSOCK(st.st_mode):
            skipped.append(path)
            continue
        name = _proto_token(os.path.basename(path), path, "name")
        line = f"{name} {_proto_mode(st)} {st.st_uid} {st.st_gid}"
        full = os.path.join(tree, path.lstrip("/"))
        if stat.S_ISREG(st.st_mode):
            links += st.st_nlink > 1
            line += " " + _proto_token(full, path, "path in the tree")
        elif stat.S_ISLNK(st.st_mode):
            line += " " + _proto_token(os.readlink(full), path, "symlink target")
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            line += f" {os.major(st.st_rdev)} {os.minor(st.st_rdev)}"
        lines.append(line)
        if stat.S_ISDIR(st.st_mode):
            open_dirs.append(path)
    lines += ["$"] * len(open_dirs)
    if skipped:
        print(f"xfs: {len(skipped)} sockets left out (a protofile cannot hold them), first: {skipped[0]}", flush=True)
    if links:
        print(f"xfs: {links} hard-linked names become separate copies (a protofile cannot link)", flush=True)
    return "\n".join(lines) + "\n"


XFS_FIELD_LINE = re.compile(rb"^[\w.\[\]]+(?: \[[^]]*\])? = ")
XFS_LISTING_LINE = re.compile(rb"^\d+\s+\d+\s+\S+\s+0x[0-9a-f]+\s+\d+ ")


def _xfs_db(image: str, commands: list[str], *, write: bool = False) -> bytes:
    """Run xfs_db commands (from stdin) on an image; fail with the first line that is an error.

    xfs_db reports a failed command on stdout, between the values it prints.
    """
    argv = ["xfs_db", "-x" if write else "-r", image]
    print("+ " + " ".join(argv) + f" < ({len(commands)} commands)", flush=True)
    try:
        proc = subprocess.run(argv, input="".join(c + "\n" for c in commands).encode(), capture_output=True,
                              env=dict(os.environ, TZ="UTC"), check=False)
    except FileNotFoundError:
        raise StageError("xfs_db: not found in the build root") from None
    errors = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
              if line.strip() and not XFS_FIELD_LINE.match(line) and not XFS_LISTING_LINE.match(line)]
    if proc.returncode != 0 or errors:
        reason = errors[0].decode("utf-8", "replace").strip() if errors else f"exit status {proc.returncode}"
        raise StageError(f"xfs_db failed: {reason}")
    return proc.stdout


def _xfs_fields(output: bytes) -> dict[str, str]:
    return {key.decode(): value.decode("utf-8", "replace")
            for key, value in re.findall(rb"^(\S+) = (.*)$", output, re.MULTILINE)}


def _xfs_inodes(image: str, entries: list[tuple[str, os.stat_result]], root: int) -> dict[str, int]:
    """The inode number of every path, listing the directories level by level with xfs_db.

    Directories are visited by inode number, never by path: xfs_db's command
    parser mangles names with bytes that are not UTF-8.
    """
    children: dict[str, list[str]] = {}
    for path, st in entries:
        if stat.S_ISDIR(st.st_mode):
            children.setdefault(os.path.dirname(path), []).append(path)
    inodes = {"/": root}
    level = ["/"]
    while level:
        by_number = {inodes[d]: d for d in level}
        commands = []
        for directory in level:
            commands += [f"inode {inodes[directory]}", "print v3.inumber", "ls"]
        current = "/"
        for line in _xfs_db(image, commands).splitlines():
            number = re.match(rb"^v3\.inumber = (\d+)$", line)
            if number:
                current = by_number[int(number.group(1))]
                continue
            # OFFSET INODE TYPE HASH NAMELEN NAME (STATUS); NAMELEN bytes of name, which has no whitespace here.
            fields = line.split(None, 5)
            if len(fields) < 6:
                continue
            name = fields[5][:int(fields[4])]
            if name in (b".", b".."):
                continue
            inodes[current.rstrip("/") + "/" + name.decode("utf-8", "surrogateescape")] = int(fields[1])
        level = [child for directory in level for child in children.get(directory, [])]
    missing = [path for path, st in entries if path not in inodes and not stat.S_ISSOCK(st.st_mode)]
    if missing:
        raise StageError(f"mkfs.xfs did not copy {missing[0]!r} into the filesystem ({len(missing)} paths missing)")
    return inodes


def _xfs_time_writes(field: str, ns: int, bigtime: bool) -> list[str]:
    """xfs_db commands that set one timestamp of the current inode."""
    if bigtime:
        # xfs_db 6.1 writes the raw on-disk value of a bigtime field through its .sec name.
        return [f"write {field}.sec {ns + XFS_BIGTIME_OFFSET * NS}"]
    return [f"write {field}.sec {ns // NS}", f"write {field}.nsec {ns % NS}"]


def _xfs_fix_inodes(tree: str, entries: list[tuple[str, os.stat_result]], image: str, epoch: Optional[int]) -> None:
    """Write back what a protofile cannot say: mtimes, sticky bits, and (with an epoch) pinned times."""
    bigtime = b"BIGTIME" in _xfs_db(image, ["version"])
    superblock = _xfs_fields(_xfs_db(image, ["sb 0", "print rootino rbmino rsumino"]))
    inodes = _xfs_inodes(image, entries, int(superblock["rootino"]))
    commands: list[str] = []

    def fix(number: int, st: Optional[os.stat_result]) -> None:
        commands.append(f"inode {number}")
        if st is not None:
            if st.st_mode & stat.S_ISVTX:
                commands.append(f"write core.mode 0{stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode):o}")
            mtime = _clamp_ns(st.st_mtime_ns, epoch)
            commands.extend(_xfs_time_writes("core.mtime", mtime, bigtime))
            if epoch is None:
                commands.extend(_xfs_time_writes("core.atime", mtime, bigtime))
        else:
            assert epoch is not None
            commands.extend(_xfs_time_writes("core.mtime", epoch * NS, bigtime))
        if epoch is not None:
            for field in ("core.atime", "core.ctime", "v3.crtime"):
                commands.extend(_xfs_time_writes(field, epoch * NS, bigtime))

    root = os.stat(tree)
    fix(inodes["/"], root)
    for path, st in entries:
        if not stat.S_ISSOCK(st.st_mode):
            fix(inodes[path], st)
    if epoch is not None:
        # The realtime bitmap and summary inodes carry mkfs's clock too.
        for field in ("rbmino", "rsumino"):
            if int(superblock[field]) > 0:
                fix(int(superblock[field]), None)
    _xfs_db(image, commands, write=True)
    _xfs_check_root_mtime(image, inodes["/"], _clamp_ns(root.st_mtime_ns, epoch))


def _xfs_check_root_mtime(image: str, root: int, expected_ns: int) -> None:
    """Read the root's mtime back: an xfs_db that encodes times differently must not pass silently."""
    fields = _xfs_fields(_xfs_db(image, [f"inode {root}", "print core.mtime.sec core.mtime.nsec"]))
    want_date = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(expected_ns // NS))
    read = (fields.get("core.mtime.sec", "").split(), fields.get("core.mtime.nsec"))
    if read != (want_date.split(), str(expected_ns % NS)):
        raise StageError(f"xfs_db did not store the root's mtime as expected (wanted {want_date}, "
                         f"{expected_ns % NS} ns; read {fields}): unsupported xfsprogs version")


# -- btrfs -----------------------------------------------------------------------------


def make_btrfs(tree: Optional[str], image: str, *, size: int, uuid: str, label: Optional[str] = None, offset: int = 0,
               whole: Optional[bool] = None, metadata: Optional[str] = None) -> None:
    """Make a btrfs filesystem of `size` bytes holding the tree (mkfs.btrfs --rootdir), in `image` at byte `offset`.

    The same contract as make_ext4 for the image file. mkfs.btrfs cannot write
    at an offset, so a filesystem inside a disk file is made in a scratch file
    of exactly `size` bytes and spliced in. The device UUID is derived from
    `uuid` where btrfs-progs can pin it (6.5.3 and newer); see the module
    docstring for what stays random or dated the build's time.
    """
    fs_uuid = _checked_uuid(uuid)
    _check_geometry(tree, size, offset)
    _check_label(label, BTRFS_LABEL_MAX, "btrfs")
    if metadata is not None and metadata not in BTRFS_METADATA_PROFILES:
        raise StageError(f"btrfs metadata profile {metadata!r} is not one of {', '.join(BTRFS_METADATA_PROFILES)}")
    # -K: no discard, so that a device's TRIM support has no say in what is written.
    argv = ["mkfs.btrfs", "-f", "-K", "-U", fs_uuid]
    if _btrfs_pins_device_uuid():
        argv += ["--device-uuid", btrfs_device_uuid(fs_uuid)]
    if label is not None:
        argv += ["-L", label]
    if metadata is not None:
        argv += ["-m", metadata]
    if tree is not None:
        argv += ["-r", tree]
    with _filesystem_file(image, size, offset, whole, "btrfs") as target:
        print(_run([*argv, target]), end="", flush=True)
        made = os.stat(target)
        if stat.S_ISREG(made.st_mode) and made.st_size != size:
            raise StageError(f"btrfs: the filesystem does not fit in {size // SECTOR} sectors "
                             f"(mkfs.btrfs needed {made.st_size // SECTOR})")


def btrfs_device_uuid(fs_uuid: str) -> str:
    """The device UUID (UUID_SUB) of a one-device btrfs: derived from the filesystem's."""
    return str(uuidlib.uuid5(uuidlib.UUID(fs_uuid), "btrfs-device-1"))


def _btrfs_pins_device_uuid() -> bool:
    """Whether the build root's mkfs.btrfs has --device-uuid (btrfs-progs 6.5.3 and newer)."""
    try:
        proc = subprocess.run(["mkfs.btrfs", "--help"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise StageError("mkfs.btrfs: not found in the build root") from None
    return "--device-uuid" in proc.stdout + proc.stderr


def _splice(source: str, destination: str, offset: int) -> None:
    """Copy the data (not the holes) of source into destination at offset."""
    with open(source, "rb") as src, open(destination, "r+b") as dst:
        end = os.fstat(src.fileno()).st_size
        position = 0
        while position < end:
            try:
                data = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(offset + data)
            remaining = hole - data
            while remaining:
                chunk = src.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            position = hole
