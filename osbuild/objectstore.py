"""The store: objects by id, atomic commits, locks, a size limit, and the source cache.

Layout (this module is the only one that knows it):

    STORE/VERSION
    STORE/objects/ID/object.json   what made the object: kind, parent, size, metadata, changes
    STORE/objects/ID/tree/         a layer (the upper dir of one stage) or an output directory
    STORE/locks/ID                 flock: exclusive while ID is built or evicted, shared while in use
    STORE/tmp/ws-*/ and ws-*.lock  workspaces of running builds; unlocked ones are debris
    STORE/sources/KIND/CHECKSUM    downloaded files, by checksum

A layer object's tree is the stack of its own layer over its parent's, down to
the first stage of its pipeline; an output object's tree is complete in itself.
Commits rename a finished directory into objects/, so an object is either whole
or absent, whatever happens to the process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from osbuild.errors import UserError
from osbuild.mounts import umount

STORE_VERSION = "1"
LAYER = "layer"
OUTPUT = "output"


@dataclass
class ObjectInfo:
    """The record kept beside an object's tree."""

    id: str
    kind: str
    parent: str | None
    type: str
    size: int
    metadata: dict[str, Any]
    changes: dict[str, Any] | None
    last_used: float

    @classmethod
    def from_json(cls, data: dict[str, Any], last_used: float) -> ObjectInfo:
        return cls(id=data["id"], kind=data["kind"], parent=data.get("parent"), type=data.get("type", ""),
                   size=int(data.get("size", 0)), metadata=data.get("metadata", {}),
                   changes=data.get("changes"), last_used=last_used)


def _lock(path: str, exclusive: bool, blocking: bool) -> int | None:
    """flock a lock file; None when non-blocking and taken. Guards against a file unlinked meanwhile."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if not blocking:
        mode |= fcntl.LOCK_NB
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _mountinfo_path(field: bytes) -> str:
    """A path as /proc/self/mountinfo writes it: raw bytes, with space, tab, newline and backslash as octal escapes."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))


def _mount_points_under(path: str) -> list[str]:
    """Mount points at or below path in this mount namespace, deepest first."""
    prefix = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            target = _mountinfo_path(line.split()[4])
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: str) -> None:
    """Delete a directory tree, first detaching any mount inside it so nothing beneath is touched."""
    if not os.path.lexists(path):
        return
    for target in _mount_points_under(path):
        umount(target)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def tree_size(path: str) -> int:
    """Bytes on disk under path, counting each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


class Workspace:
    """A private scratch directory in the store for one build; removed when closed."""

    def __init__(self, store: ObjectStore) -> None:
        while True:
            name = "ws-" + next(tempfile._get_candidate_names())  # type: ignore[attr-defined]
            lock_path = os.path.join(store.tmp_dir, name + ".lock")
            if os.path.exists(lock_path):
                continue
            fd = _lock(lock_path, exclusive=True, blocking=False)
            if fd is None:
                continue
            break
        self._lock_fd: int | None = fd
        self._lock_path = lock_path
        self.path = os.path.join(store.tmp_dir, name)
        os.mkdir(self.path, 0o700)

    def subdir(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self) -> None:
        if self._lock_fd is None:
            return
        remove_tree(self.path)
        os.unlink(self._lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None


class ObjectStore:
    """Objects by id. Open it before use; close it to release every lock it holds."""

    def __init__(self, path: str, max_size: int | None = None) -> None:
        self.path = os.path.abspath(path)
        self.max_size = max_size
        self.objects_dir = os.path.join(self.path, "objects")
        self.locks_dir = os.path.join(self.path, "locks")
        self.tmp_dir = os.path.join(self.path, "tmp")
        self.sources_dir = os.path.join(self.path, "sources")
        self._held: dict[str, int] = {}
        self._workspace: Workspace | None = None

    # -- opening and closing ---------------------------------------------------------

    def open(self) -> ObjectStore:
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UserError(f"store {self.path} is not a directory")
        try:
            for d in (self.path, self.objects_dir, self.locks_dir, self.tmp_dir, self.sources_dir):
                os.makedirs(d, exist_ok=True)
            version_path = os.path.join(self.path, "VERSION")
            if os.path.exists(version_path):
                with open(version_path, encoding="utf-8") as f:
                    version = f.read().strip()
                if version != STORE_VERSION:
                    raise UserError(f"store {self.path} has layout version {version}; this osbuild uses {STORE_VERSION}")
            else:
                # A name of its own (not in tmp/, where another build's clean-up could take it):
                # two builds may create the same new store at once.
                fd, staging = tempfile.mkstemp(prefix=".VERSION-", dir=self.path)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(STORE_VERSION + "\n")
                os.chmod(staging, 0o644)
                os.rename(staging, version_path)
            self.remove_debris()
            self._workspace = Workspace(self)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.ENOTDIR, errno.EEXIST):
                raise UserError(f"store {self.path} is not usable: {e.strerror}") from e
            raise
        return self

    def close(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None

    def __enter__(self) -> ObjectStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workspace(self) -> Workspace:
        assert self._workspace is not None, "store is not open"
        return self._workspace

    def remove_debris(self) -> list[str]:
        """Remove what crashed or killed builds left in tmp/; a running build's workspace is locked and kept."""
        removed = []
        entries = sorted(os.listdir(self.tmp_dir))
        for entry in entries:
            path = os.path.join(self.tmp_dir, entry)
            if entry.endswith(".lock"):
                fd = _lock(path, exclusive=True, blocking=False)
                if fd is None:
                    continue
                remove_tree(path[: -len(".lock")])
                os.unlink(path)
                os.close(fd)
                removed.append(entry[: -len(".lock")])
            elif not os.path.exists(path + ".lock"):
                # A workspace's lock file exists (locked) before its directory does.
                remove_tree(path)
                removed.append(entry)
        return removed

    # -- reading ---------------------------------------------------------------------

    def _object_dir(self, object_id: str) -> str:
        return os.path.join(self.objects_dir, object_id)

    def tree_path(self, object_id: str) -> str:
        """The object's own directory of files: its layer, or its output files."""
        return os.path.join(self._object_dir(object_id), "tree")

    def has(self, object_id: str) -> bool:
        return os.path.exists(os.path.join(self._object_dir(object_id), "object.json"))

    def info(self, object_id: str) -> ObjectInfo:
        path = os.path.join(self._object_dir(object_id), "object.json")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return ObjectInfo.from_json(data, os.stat(path).st_mtime)

    def changes(self, object_id: str) -> dict[str, Any] | None:
        """Every path the object's stage added, removed or changed, if it was recorded."""
        try:
            with open(os.path.join(self._object_dir(object_id), "changes.json"), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            return None
        return data

    def chain(self, object_id: str) -> list[str]:
        """The object and its ancestors, top-most first: the layers its tree is made of."""
        ids = []
        current: str | None = object_id
        while current is not None:
            ids.append(current)
            current = self.info(current).parent
        return ids

    def layers(self, object_id: str) -> list[str]:
        return [self.tree_path(i) for i in self.chain(object_id)]

    def list_objects(self) -> list[ObjectInfo]:
        found = []
        for object_id in os.listdir(self.objects_dir):
            try:
                found.append(self.info(object_id))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def size(self) -> int:
        return sum(o.size for o in self.list_objects())

    # -- locking ---------------------------------------------------------------------

    def hold(self, object_id: str) -> bool:
        """Keep an object and its ancestors from eviction until close(); False if it is gone."""
        taken = []
        try:
            for current in reversed(self.chain(object_id)):
                if current in self._held:
                    continue
                fd = _lock(os.path.join(self.locks_dir, current), exclusive=False, blocking=True)
                assert fd is not None
                if not self.has(current):
                    os.close(fd)
                    raise FileNotFoundError(current)
                self._held[current] = fd
                taken.append(current)
        except FileNotFoundError:
            for current in taken:
                os.close(self._held.pop(current))
            return False
        now = time.time()
        for current in self.chain(object_id):
            os.utime(os.path.join(self._object_dir(current), "object.json"), (now, now))
        return True

    def building(self, object_id: str) -> BuildLock:
        """An exclusive claim on building object_id, so two builds never build it twice."""
        return BuildLock(self, object_id)

    # -- writing ---------------------------------------------------------------------

    def commit(self, directory: str, object_id: str, *, kind: str, parent: str | None, type: str,
               metadata: dict[str, Any], changes: dict[str, Any] | None = None,
               change_list: dict[str, Any] | None = None) -> None:
        """Move a finished directory (in this store's workspace) into the store as object_id.

        `changes` is the summary kept in object.json; `change_list`, every path the
        object added, removed or changed, goes beside it (see changes()).
        """
        staging = tempfile.mkdtemp(prefix="commit-", dir=self.workspace.path)
        os.rename(directory, os.path.join(staging, "tree"))
        if change_list is not None:
            with open(os.path.join(staging, "changes.json"), "w", encoding="utf-8") as f:
                json.dump(change_list, f, sort_keys=True)
        record = {
            "id": object_id, "kind": kind, "parent": parent, "type": type,
            "size": tree_size(os.path.join(staging, "tree")),
            "metadata": metadata, "changes": changes,
        }
        with open(os.path.join(staging, "object.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, self._object_dir(object_id))
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            remove_tree(staging)  # another build committed the same object first

    def evict(self, protect: Collection[str] = ()) -> list[str]:
        """Remove least-recently-used objects until the store fits max_size.

        Objects in use by any build (this one included), protected ones, and the
        ancestors of either, stay. Removing an object removes its descendants.
        """
        if self.max_size is None:
            return []
        objects = {o.id: o for o in self.list_objects()}
        total = sum(o.size for o in objects.values())
        if total <= self.max_size:
            return []
        children: dict[str, list[str]] = {}
        for o in objects.values():
            if o.parent:
                children.setdefault(o.parent, []).append(o.id)

        def depth(object_id: str) -> int:
            d, current = 0, objects.get(object_id)
            while current is not None and current.parent:
                d, current = d + 1, objects.get(current.parent)
            return d

        def family(object_id: str) -> list[str]:
            out, todo = [], [object_id]
            while todo:
                current = todo.pop()
                out.append(current)
                todo += children.get(current, [])
            return out

        protected: set[str] = set()
        for object_id in set(protect) | set(self._held):
            protected.update(i for i in self._chain_in(objects, object_id))
        evicted: list[str] = []
        order = sorted(objects.values(), key=lambda o: (o.last_used, -depth(o.id)))
        for candidate in order:
            if total <= self.max_size:
                break
            if candidate.id in evicted or candidate.id in protected:
                continue
            members = family(candidate.id)
            if protected.intersection(members):
                continue
            fds = []
            for member in members:
                fd = _lock(os.path.join(self.locks_dir, member), exclusive=True, blocking=False)
                if fd is None:
                    break
                fds.append(fd)
            if len(fds) == len(members):
                for member in members:
                    if member in objects and self.has(member):
                        trash = tempfile.mkdtemp(prefix="evict-", dir=self.workspace.path)
                        os.rename(self._object_dir(member), os.path.join(trash, member))
                        remove_tree(trash)
                        os.unlink(os.path.join(self.locks_dir, member))
                        total -= objects[member].size
                        evicted.append(member)
            for fd in fds:
                os.close(fd)
        return evicted

    @staticmethod
    def _chain_in(objects: dict[str, ObjectInfo], object_id: str) -> Iterator[str]:
        current = objects.get(object_id)
        while current is not None:
            yield current.id
            current = objects.get(current.parent) if current.parent else None

    def source_path(self, kind: str, checksum: str) -> str:
        return os.path.join(self.sources_dir, kind, checksum)


class BuildLock:
    """Context manager: holds the exclusive build claim on one object id.

    `needed` says whether the caller must build the object (it is absent once
    the claim is held). On exit the claim turns into a shared hold when the
    object exists, so it stays safe from eviction for the rest of the build.
    """

    def __init__(self, store: ObjectStore, object_id: str) -> None:
        self.store = store
        self.object_id = object_id
        self.needed = False
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        path = os.path.join(self.store.locks_dir, self.object_id)
        while True:
            fd = _lock(path, exclusive=True, blocking=False)
            if fd is not None:
                self._fd = fd
                self.needed = not self.store.has(self.object_id)
                return self
            # Another build holds the claim. Its commit turns the claim into a shared hold, so a
            # shared lock is granted as soon as the object exists, not when that build ends.
            fd = _lock(path, exclusive=False, blocking=True)
            assert fd is not None
            if self.store.has(self.object_id):
                self._fd = fd
                self.needed = False
                return self
            # The other build failed or was interrupted: claim the object again.
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        assert fd is not None
        if self.store.has(self.object_id) and self.object_id not in self.store._held:
            # Turn the claim into a hold on the same lock, leaving no unlocked moment for eviction.
            fcntl.flock(fd, fcntl.LOCK_SH)
            self.store._held[self.object_id] = fd
            self.store.hold(self.object_id)
        else:
            os.close(fd)
