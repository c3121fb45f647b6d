"""Format 2's devices and mounts, made on the host side for one stage and released when it ends.

The only code that makes a loop device or mounts a filesystem for a stage; none of it
runs code of a stage or of the library directory. Everything is undone in `close()`
(called in a `finally`), and also after SIGKILL: a loop device is attached with
autoclear and held only by this process's descriptor and by the mounts, which live in
the engine's private mount namespace, so both go when the engine's last process does.

    devices:  NAME -> /dev/loopN, seen by the stage at the same path (arguments: devices.NAME.path)
    mounts:   NAME -> a directory under the stage's mounts directory, seen at
              /run/osbuild/mounts/TARGET (arguments: mounts.NAME.path)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from osbuild import sandbox
from osbuild.errors import BuildError, UserError
from osbuild.inputs import resolve_in_tree
from osbuild.mounts import bind, umount
from osbuild.pipeline import Device, Mount, Stage

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LOOPBACK = "org.osbuild.loopback"
FILESYSTEMS = {"org.osbuild.ext4": "ext4", "org.osbuild.xfs": "xfs", "org.osbuild.fat": "vfat", "org.osbuild.btrfs": "btrfs"}
# Mount options passed on as KEY=VALUE (each mount module's schema says which it takes).
VALUE_OPTIONS = ("uid", "gid", "umask", "shortname", "subvol", "compress")
BIND = "org.osbuild.bind"
MOUNTS_DIR = "/run/osbuild/mounts"
CONFIGURE_ATTEMPTS = 20


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64), ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64), ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32), ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_uint8 * 64), ("lo_crypt_name", ctypes.c_uint8 * 64),
        ("lo_encrypt_key", ctypes.c_uint8 * 32), ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64),
                ("reserved", ctypes.c_uint64 * 8)]


def refuse(stages: list[tuple[str, Stage]]) -> None:
    """Fail before anything runs when a stage needs what this engine cannot make here, naming it.

    Devices and mounts need the host's root: a rootless build that asks for them is refused.
    """
    for pipeline, stage in stages:
        if not (stage.devices or stage.mounts):
            continue
        where = f"stage {stage.name} in pipeline {pipeline}"
        if os.geteuid() != 0 or sandbox.rootless():
            raise UserError(f"{where} uses devices or mounts, which need root on the host; "
                            "run as root, or build a manifest without them; nothing was built")
        for device in stage.devices.values():
            if device.type != LOOPBACK or device.parent is not None:
                raise UserError(f"{where}: device {device.name} ({device.type}"
                                f"{' with a parent' if device.parent else ''}) is not one this osbuild makes")


@dataclass
class HostServices:
    """The devices and mounts of one stage run. Use as a context manager; exit releases everything."""

    tree: str                     # the stage's tree on the host
    mounts_dir: str               # the host directory the sandbox sees at /run/osbuild/mounts
    # How a directory is shown over a path of the tree so that the module sees its owners on
    # disk (Identity.idmap); a plain bind when None.
    show: Callable[[str, str, bool], None] | None = None
    _loops: list[int] = field(default_factory=list)
    _mounted: list[str] = field(default_factory=list)
    device_paths: dict[str, str] = field(default_factory=dict)
    _partitions: dict[tuple[str, int], str] = field(default_factory=dict)

    def __enter__(self) -> HostServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, stage: Stage) -> tuple[dict[str, Any], dict[str, Any]]:
        """Open every device and make every mount of the stage; the arguments' `devices` and `mounts`."""
        devices = {}
        for name, device in stage.devices.items():
            self.device_paths[name] = self._loopback(device)
            devices[name] = {"path": self.device_paths[name]}
        mounts = {}
        for mount in stage.mounts:
            mounts[mount.name] = {"path": self._mount(mount)}
        return devices, mounts

    def _loopback(self, device: Device) -> str:
        options = device.options
        # Resolved inside the tree, as if it were /: neither .. nor a symlink reaches a host file.
        filename = resolve_in_tree(self.tree, str(options["filename"]))
        if os.path.islink(filename) or not os.path.isfile(filename):
            raise BuildError(f"device {device.name}: {options['filename']} is not a regular file in the tree")
        sector = int(options.get("sector-size", 512))
        read_only = bool(options.get("read-only", False))
        fd, path = self._attach(filename, int(options.get("start", 0)) * sector, int(options.get("size", 0)) * sector,
                                sector, read_only, f"device {device.name}")
        if options.get("lock", False):
            fcntl.flock(fd, fcntl.LOCK_EX)
        return path

    def _partition(self, mount: Mount) -> str:
        """A loop device over one partition of a mount's device, found in its partition table.

        The kernel may not scan loop devices for partitions (this one does not): the table is
        read with sfdisk, and the partition gets a loop device of its own over its sectors.
        """
        assert mount.source is not None and mount.partition is not None
        key = (mount.source, mount.partition)
        if key not in self._partitions:
            parent = self.device_paths[mount.source]
            where = f"mount {mount.name}: partition {mount.partition} of device {mount.source}"
            proc = subprocess.run(["sfdisk", "--json", parent], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BuildError(f"{where}: no partition table ({proc.stderr.strip()})")
            table = json.loads(proc.stdout)["partitiontable"]
            sector = int(table.get("sectorsize", 512))
            found = [p for p in table.get("partitions", []) if _partition_number(p["node"]) == mount.partition]
            if not found:
                raise BuildError(f"{where}: the device's partition table has no such partition")
            _, path = self._attach(parent, int(found[0]["start"]) * sector, int(found[0]["size"]) * sector, sector,
                                   bool(mount.options.get("readonly")), where)
            self._partitions[key] = path
        return self._partitions[key]

    def _attach(self, backing_path: str, offset: int, size: int, sector: int, read_only: bool,
                name: str) -> tuple[int, str]:
        """A loop device over backing_path (a file or a device) from offset for size bytes (0: to its end)."""
        backing = os.open(backing_path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        try:
            config = _LoopConfig()
            config.fd = backing
            config.block_size = sector
            config.info.lo_offset = offset
            config.info.lo_sizelimit = size
            config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
            fd, path = self._configure(config, name)
        finally:
            os.close(backing)
        self._loops.append(fd)
        return fd, path

    @staticmethod
    def _configure(config: _LoopConfig, name: str) -> tuple[int, str]:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(CONFIGURE_ATTEMPTS):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                path = f"/dev/loop{number}"
                fd = _open_device(path)
                try:
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                except OSError as e:
                    os.close(fd)
                    if e.errno == errno.EBUSY:   # another process took that device first
                        continue
                    raise BuildError(f"{name}: cannot attach a loop device: {e.strerror}") from e
                return fd, path
        finally:
            os.close(control)
        raise BuildError(f"{name}: no free loop device after {CONFIGURE_ATTEMPTS} attempts")

    def _mount(self, mount: Mount) -> str:
        if mount.type == BIND:
            return self._bind(mount)
        target = self._inside(self.mounts_dir, (mount.target or "/"), mount)
        os.makedirs(target, exist_ok=True)
        assert mount.source is not None
        flags = ["ro"] if mount.options.get("readonly") else []
        flags += [f"{key}={mount.options[key]}" for key in VALUE_OPTIONS if key in mount.options]
        if mount.options.get("norecovery"):
            flags.append("norecovery")
        device = self._partition(mount) if mount.partition is not None else self.device_paths[mount.source]
        argv = ["mount", "-t", FILESYSTEMS[mount.type], *(["-o", ",".join(flags)] if flags else []), device, target]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"mount {mount.name} ({mount.type} on device {mount.source}): {proc.stderr.strip()}")
        self._mounted.append(target)
        return MOUNTS_DIR + target[len(self.mounts_dir):]

    def _bind(self, mount: Mount) -> str:
        """org.osbuild.bind: a path of the mounts (options.source, mount://PATH) bound over a path of the tree
        (target, tree://PATH), recursively, as osbuild does."""
        source = self._inside(self.mounts_dir, str(mount.options["source"])[len("mount://"):], mount)
        target = self._inside(self.tree, str(mount.target)[len("tree://"):], mount)
        if not os.path.isdir(source) or not os.path.isdir(target) or os.path.islink(target):
            raise BuildError(f"mount {mount.name}: {mount.options['source']} and {mount.target} must both be directories")
        if self.show is not None:
            self.show(source, target, False)
        else:
            bind(source, target)
        self._mounted.append(target)
        return "/run/osbuild/tree" + target[len(self.tree):]

    @staticmethod
    def _inside(root: str, path: str, mount: Mount) -> str:
        """root/path, refusing a path that climbs out of root (symlinks included)."""
        joined = os.path.normpath(os.path.join(root, path.lstrip("/")))
        real, real_root = os.path.realpath(joined), os.path.realpath(root)
        for candidate, base in ((joined, root), (real, real_root)):
            if candidate != base and not candidate.startswith(base + os.sep):
                raise BuildError(f"mount {mount.name}: {path} leads out of {root}")
        return joined

    def close(self) -> None:
        """Unmount, then detach: every mount this stage got, deepest last made first, then its loop devices."""
        while self._mounted:
            umount(self._mounted.pop())
        while self._loops:
            os.close(self._loops.pop())   # autoclear detaches the device once nothing holds it


def _partition_number(node: str) -> int | None:
    """The number of a partition from its node's name (/dev/loop3p2: 2)."""
    match = re.search(r"(\d+)$", node)
    return int(match.group(1)) if match else None


def _open_device(path: str) -> int:
    # devtmpfs makes the node of a device just added a moment later.
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            time.sleep(0.01)
            continue
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            os.close(fd)
            raise BuildError(f"{path} is not a block device")
        return fd
    raise BuildError(f"{path} did not appear")

