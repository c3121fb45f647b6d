"""Mount namespace and mount primitives the engine needs on the host side.

The engine enters a private mount namespace before it mounts anything, so every
overlay it makes is invisible to the host and to other builds, and vanishes with
the engine's last process, even after SIGKILL.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

# Syscall numbers of the new mount API are the same on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
SYS_MOUNT_SETATTR = 442
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# The classic mount(2) data string must fit in one page.
_CLASSIC_OPTIONS_LIMIT = 4000

# Layers in the store are immutable and reused in many stacks; features that
# write lower-layer references into an upper layer would tie a layer to one stack.
OVERLAY_FEATURES = ("redirect_dir=off", "index=off", "metacopy=off")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

_in_private_namespace = False


class _MountAttr(ctypes.Structure):
    """struct mount_attr of mount_setattr(2)."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class MountError(OSError):
    """A mount operation failed; the message names the target and the reason."""


def _raise(what: str, target: str) -> None:
    err = ctypes.get_errno()
    raise MountError(err, f"{what} {target}: {os.strerror(err)}")


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts never propagate.

    Must run before the process starts threads (unshare(CLONE_NEWNS) implies CLONE_FS).
    """
    global _in_private_namespace
    if _in_private_namespace:
        return
    if threading.active_count() > 1:
        raise RuntimeError("enter_private_mount_namespace() must run before any thread starts")
    if _libc.unshare(CLONE_NEWNS) != 0:
        _raise("unshare mount namespace for", "engine")
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        if ctypes.get_errno() == errno.EINVAL:
            # A chroot into a plain directory: the mount that holds / is above the root, out of reach,
            # and without making it private every mount of the engine would show on the host.
            raise MountError(errno.EINVAL, "the engine's / is not a mount point (a chroot into a plain directory?): "
                                           "bind-mount the root's directory on itself before entering it, as "
                                           "systemd-nspawn and container runtimes do")
        _raise("make private", "/")
    _in_private_namespace = True


def bind(source: str, target: str, readonly: bool = False) -> None:
    """Bind-mount source on target (recursively), read-only when asked."""
    if _libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
        _raise("bind-mount on", target)
    if readonly:
        flags = MS_BIND | MS_REC | MS_RDONLY | 0x20  # MS_REMOUNT
        if _libc.mount(b"none", target.encode(), None, flags, None) != 0:
            _raise("remount read-only", target)


def _detached_copy(source: str, recursive: bool) -> int:
    """A detached copy of the mount tree at source (open_tree(2)); a file descriptor."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    fd = _syscall(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(source.encode()), ctypes.c_uint(flags))
    if fd < 0:
        _raise("open_tree", source)
    return fd


def _set_attributes(fd: int, attributes: int, what: str, userns_fd: int = 0, recursive: bool = False) -> None:
    attr = _MountAttr(attributes, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    if _syscall(SYS_MOUNT_SETATTR, ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_uint(flags),
                ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) < 0:
        _raise("mount_setattr", what)


def _attach(fd: int, target: str) -> None:
    try:
        if _syscall(SYS_MOVE_MOUNT, ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                    ctypes.c_char_p(target.encode()), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) < 0:
            _raise("move mount to", target)
    finally:
        os.close(fd)


def readonly_bind(source: str, target: str) -> None:
    """Bind source (a directory or a file, with its submounts) on target, read-only, nosuid and nodev.

    Made here, in the engine's namespace, the flags are locked for a sandbox in a user
    namespace: the sandbox's root cannot remount the bind writable.
    """
    fd = _detached_copy(source, recursive=True)
    try:
        _set_attributes(fd, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, source, recursive=True)
    except BaseException:
        os.close(fd)
        raise
    _attach(fd, target)


def idmapped_bind(source: str, target: str, userns_fd: int, readonly: bool) -> None:
    """Bind the directory source (with the file systems mounted under it) on target through the id
    mapping of a user namespace.

    A file owned by N on disk shows as the namespace's id N: the sandbox's root
    sees and writes a tree with its real owners, while on the host those owners
    are ids that own nothing.
    """
    fd = _detached_copy(source, recursive=True)
    try:
        _set_attributes(fd, MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if readonly else 0) | MOUNT_ATTR_NODEV,
                        source, userns_fd=userns_fd, recursive=True)
    except BaseException:
        os.close(fd)
        raise
    _attach(fd, target)


def mount_tmpfs(target: str, options: str = "mode=0755") -> None:
    """A fresh tmpfs on target."""
    if _libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        _raise("mount tmpfs on", target)


def umount(target: str) -> None:
    """Detach the mount at target (lazily, so open files do not keep it busy)."""
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):  # not mounted: nothing to do
            return
        _raise("unmount", target)


def mount_overlay(target: str, lowers: Sequence[str], upper: str | None = None, work: str | None = None,
                  volatile: bool = False, userxattr: bool = False) -> None:
    """Mount an overlay of `lowers` (top-most first) on target.

    With `upper` and `work` the mount is writable and every change lands in
    `upper`; without them it is read-only. A read-only overlay needs two lower
    layers, so callers stack an empty directory under a single layer.
    """
    if (upper is None) != (work is None):
        raise ValueError("upper and work go together")
    if not lowers:
        raise ValueError("an overlay needs at least one lower layer")
    if upper is None and len(lowers) < 2:
        raise ValueError("a read-only overlay needs at least two lower layers")
    features: tuple[str, ...] = OVERLAY_FEATURES
    if userxattr:
        # In a user namespace "off" may mean "follow", which userxattr refuses; neither creates redirects.
        features = ("redirect_dir=nofollow", *OVERLAY_FEATURES[1:], "userxattr=on")
    try:
        _mount_overlay_fsconfig(target, lowers, upper, work, volatile, features)
    except MountError as e:
        # ENOSYS: no new mount API; EINVAL: a kernel before "lowerdir+" (6.8).
        if e.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        _mount_overlay_classic(target, lowers, upper, work, volatile, features)


def _mount_overlay_classic(target: str, lowers: Sequence[str], upper: str | None, work: str | None,
                           volatile: bool, features: Sequence[str]) -> None:
    options = ["lowerdir=" + ":".join(lowers)]
    if upper is not None:
        options += [f"upperdir={upper}", f"workdir={work}"] + (["volatile"] if volatile else [])
    options += [f.removesuffix("=on") for f in features]
    data = ",".join(options)
    if len(data) > _CLASSIC_OPTIONS_LIMIT:
        raise MountError(errno.E2BIG,
                         f"overlay on {target}: {len(lowers)} layers do not fit in one mount option string on this kernel")
    flags = 0 if upper is not None else MS_RDONLY
    if _libc.mount(b"overlay", target.encode(), b"overlay", flags, data.encode()) != 0:
        _raise("mount overlay on", target)


def _syscall(number: int, *args: object) -> int:
    ret = int(_libc.syscall(ctypes.c_long(number), *args))
    return ret


def _mount_overlay_fsconfig(target: str, lowers: Sequence[str], upper: str | None, work: str | None,
                            volatile: bool, features: Sequence[str]) -> None:
    fs_fd = _syscall(SYS_FSOPEN, ctypes.c_char_p(b"overlay"), ctypes.c_uint(FSOPEN_CLOEXEC))
    if fs_fd < 0:
        _raise("fsopen overlay for", target)
    try:
        def set_string(key: str, value: str) -> None:
            if _syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_STRING),
                        ctypes.c_char_p(key.encode()), ctypes.c_char_p(value.encode()), ctypes.c_int(0)) < 0:
                _raise(f"overlay option {key} for", target)

        for lower in lowers:
            set_string("lowerdir+", lower)
        if upper is not None and work is not None:
            set_string("upperdir", upper)
            set_string("workdir", work)
            if volatile:
                if _syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_FLAG),
                            ctypes.c_char_p(b"volatile"), None, ctypes.c_int(0)) < 0:
                    _raise("overlay option volatile for", target)
        for feature in features:
            key, value = feature.split("=", 1)
            if value == "on":
                if _syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_FLAG),
                            ctypes.c_char_p(key.encode()), None, ctypes.c_int(0)) < 0:
                    _raise(f"overlay option {key} for", target)
            else:
                set_string(key, value)
        if _syscall(SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_CMD_CREATE),
                    None, None, ctypes.c_int(0)) < 0:
            _raise("create overlay for", target)
        attrs = 0 if upper is not None else MOUNT_ATTR_RDONLY
        mnt_fd = _syscall(SYS_FSMOUNT, ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))
        if mnt_fd < 0:
            _raise("fsmount overlay for", target)
        _attach(mnt_fd, target)
    finally:
        os.close(fs_fd)
