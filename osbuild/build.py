"""Build a manifest: for each stage, reuse its object from the store or run it in a sandbox and commit it.

Reading `Builder.build()` tells the whole story: fetch sources, then for every
pipeline in build order and every stage in it, take the object from the store
or build it, then export what was asked for.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from osbuild import devices, exports, inputs, sandbox, sources, treediff
from osbuild.errors import BuildError, UserError
from osbuild.exports import remove_stale_exports, replace_atomically, staging_path
from osbuild.monitor import Monitor
from osbuild.mounts import mount_overlay, umount
from osbuild.objectstore import LAYER, OUTPUT, ObjectStore, Workspace, remove_tree
from osbuild.pipeline import Manifest, Pipeline, Stage

TREE = "/run/osbuild/tree"
OUTPUT_DIR = "/run/osbuild/output"
API_DIR = "/run/osbuild/api"
META_FILE = "/run/osbuild/meta"
DEVICE_NODES_FILE = "/run/osbuild/device-nodes"
# The device nodes a stage may ask for (osbuild.api.device_node): what every root file
# system's /dev holds before devtmpfs covers it, and nothing that reaches hardware.
ALLOWED_DEVICE_NODES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
SELINUX_LABELS_FILE = "/run/osbuild/selinux-labels"
SELINUX_XATTR = "security.selinux"
# Longer than any context a policy defines; a bound keeps a stage from asking for huge attributes.
LABEL_MAX = 4096
SOURCES_DIR = "/run/osbuild/sources"
MOUNTS_DIR = "/run/osbuild/mounts"
DEVICES_DIR = "/dev"


@dataclass
class StageResult:
    """What happened to one stage: built or taken from the store, and what it left."""

    pipeline: str
    type: str
    id: str
    status: str                     # "built" or "cached"
    duration: float
    metadata: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] | None = None
    output: str = ""                # what the stage printed, when it ran in this build

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "status": self.status,
                "duration": round(self.duration, 3), "metadata": self.metadata, "changes": self.changes}


@dataclass
class StageFailure:
    pipeline: str
    type: str
    id: str
    returncode: int
    output: list[str]               # the last lines, for a person
    log: str = ""                   # everything it printed, for --json

    def as_json(self) -> dict[str, Any]:
        # `details.stage` is where osbuild's result names the failed stage, for programs that read it there.
        return {"pipeline": self.pipeline, "type": self.type, "id": self.id,
                "returncode": self.returncode, "output": "\n".join(self.output),
                "details": {"stage": {"id": self.id, "type": self.type, "output": self.log}}}


@dataclass
class BuildResult:
    success: bool = True
    stages: list[StageResult] = field(default_factory=list)
    failure: StageFailure | None = None
    exports: dict[str, str] = field(default_factory=dict)


class StageFailed(BuildError):
    def __init__(self, failure: StageFailure) -> None:
        super().__init__(f"stage {failure.type} in pipeline {failure.pipeline} (id {failure.id}) "
                         f"failed with exit status {failure.returncode}")
        self.failure = failure


def clamp_times(root: str, epoch: int) -> None:
    """Set every time in a directory that is later than `epoch` to `epoch` (SOURCE_DATE_EPOCH)."""
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if st.st_mtime > epoch or st.st_atime > epoch:
                os.utime(path, (min(st.st_atime, epoch), min(st.st_mtime, epoch)), follow_symlinks=False)
    st = os.lstat(root)
    os.utime(root, (min(st.st_atime, epoch), min(st.st_mtime, epoch)))


def read_requests(requests: str, stage: Stage, what: str) -> list[dict[str, Any]]:
    """The JSON lines a stage wrote to a request file (device nodes, SELinux labels)."""
    with open(requests, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                raise ValueError
        except ValueError:
            raise BuildError(f"stage {stage.name} (id {stage.id}) asked for {what} in words the engine "
                             f"does not read: {line[:200]!r}") from None
        records.append(record)
    return records


def path_parts(path: str) -> list[str]:
    """The components of a path in the tree (none for its root); a path with '..' raises ValueError."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(path)
    return parts


class TreeWalker:
    """Directories of a tree opened from its root without following symlinks, so a tree cannot point
    the engine at a host path. Keeps the last path's chain open: requests in sorted order are cheap."""

    def __init__(self, tree: str) -> None:
        self._fds = [os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)]
        self._parts: list[str] = []

    def directory(self, parts: list[str]) -> int:
        """A descriptor of the directory at `parts` (components from the tree's root)."""
        common = 0
        while common < min(len(parts), len(self._parts)) and parts[common] == self._parts[common]:
            common += 1
        while len(self._parts) > common:
            self._parts.pop()
            os.close(self._fds.pop())
        for part in parts[common:]:
            self._fds.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self._fds[-1]))
            self._parts.append(part)
        return self._fds[-1]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def make_device_nodes(tree: str, requests: str, stage: Stage, identity: sandbox.Identity) -> None:
    """Make the device nodes a stage asked for (osbuild.api.device_node) in its tree, now that it has ended."""
    records = read_requests(requests, stage, "a device node")
    if records and identity.rootless:
        raise BuildError(f"stage {stage.name} (id {stage.id}) asked for device nodes, which only a build as root "
                         "can make")
    base = sandbox.ID_BASE if not identity.rootless else 0
    walker = TreeWalker(tree)
    try:
        for request in records:
            _make_device_node(walker, request, stage, base)
    finally:
        walker.close()


def _make_device_node(walker: TreeWalker, request: dict[str, Any], stage: Stage, base: int) -> None:
    path, major, minor = request["path"], request.get("major", -1), request.get("minor", -1)
    mode, uid, gid = request.get("mode", 0o666), request.get("uid", 0), request.get("gid", 0)
    mtime = request.get("mtime_ns")
    if not all(isinstance(v, int) for v in (major, minor, mode, uid, gid, mtime or 0)):
        raise BuildError(f"stage {stage.name} (id {stage.id}) asked for a device node in words the engine "
                         f"does not read: {json.dumps(request)[:200]!r}")
    if (major, minor) not in ALLOWED_DEVICE_NODES:
        raise BuildError(f"stage {stage.name} (id {stage.id}) asked for device node {major}:{minor} at {path}: "
                         "only null, zero, full, random, urandom, tty, console and ptmx are made")
    try:
        parts = path_parts(path)
    except ValueError:
        parts = []
    if not parts or not 0 <= uid < sandbox.ID_COUNT or not 0 <= gid < sandbox.ID_COUNT:
        raise BuildError(f"stage {stage.name} (id {stage.id}) asked for a device node at {path!r}, "
                         f"owned by {uid}:{gid}: not a path in the tree, or not its owners")
    try:
        directory = walker.directory(parts[:-1])
        name = parts[-1]
        times = os.stat(directory)
        if os.path.lexists(f"/proc/self/fd/{directory}/{name}"):
            os.unlink(name, dir_fd=directory)
        os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(major, minor), dir_fd=directory)
        # Through the tree's idmapped layers: the sandbox's ids are its owners on disk.
        os.chown(name, base + uid, base + gid, dir_fd=directory, follow_symlinks=False)
        os.chmod(name, mode & 0o7777, dir_fd=directory)
        if mtime is not None:
            os.utime(name, ns=(mtime, mtime), dir_fd=directory, follow_symlinks=False)
        os.utime(directory, ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError as e:
        raise BuildError(f"stage {stage.name} (id {stage.id}) asked for a device node at {path}: {e.strerror}") from e


def write_selinux_labels(tree: str, requests: str, stage: Stage, identity: sandbox.Identity) -> None:
    """Write the SELinux labels a stage computed (osbuild.api.selinux_labels) as security.selinux, now that it ended.

    A module's root cannot write security.* attributes (the kernel wants CAP_SYS_ADMIN over
    the filesystem's namespace); the engine as host root can. Each path is labelled itself,
    a symlink too, never what it points to.
    """
    records = read_requests(requests, stage, "SELinux labels")
    if records and identity.rootless:
        raise BuildError(f"stage {stage.name} (id {stage.id}) labels files for SELinux, which only a build as "
                         "root can write (security.selinux attributes)")
    labelled = []
    for request in records:
        label = request.get("label")
        try:
            parts = path_parts(request["path"])
        except ValueError:
            parts = None
        if parts is None or not isinstance(label, str) or not label or "\0" in label or len(label) > LABEL_MAX:
            raise BuildError(f"stage {stage.name} (id {stage.id}) asked for SELinux label {str(label)[:80]!r} at "
                             f"{request['path'][:200]!r}: not a path in the tree, or not a label")
        labelled.append((parts, label))
    # The names of each hard-linked file, by its inode before labelling split it (see _link_again).
    names: dict[tuple[int, int], list[list[str]]] = {}
    walker = TreeWalker(tree)
    try:
        for parts, label in sorted(labelled):
            # The label as setfiles writes it: the context and a terminating NUL.
            value = os.fsencode(label) + b"\0"
            try:
                if not parts:
                    os.setxattr(f"/proc/self/fd/{walker.directory([])}", SELINUX_XATTR, value)
                    continue
                directory = walker.directory(parts[:-1])
                st = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    names.setdefault((st.st_dev, st.st_ino), []).append(parts)
                os.setxattr(f"/proc/self/fd/{directory}/{parts[-1]}", SELINUX_XATTR, value, follow_symlinks=False)
            except OSError as e:
                raise BuildError(f"stage {stage.name} (id {stage.id}) asked for an SELinux label at "
                                 f"/{'/'.join(parts)}: {e.strerror}") from e
    finally:
        walker.close()
    _link_again(tree, [group for group in names.values() if len(group) > 1], stage)


def _link_again(tree: str, groups: list[list[list[str]]], stage: Stage) -> None:
    """Make the names of each file one file again, where labelling them split it.

    Writing an attribute copies a lower layer's file up into the stage's layer, one
    name at a time and without its other names (the overlay is mounted without
    index), so two names of one file would come out as two files. Names whose copies
    still agree (content untouched, same label, owner and mode) are linked again to the
    first; the directories keep their times.
    """
    sources, targets = TreeWalker(tree), TreeWalker(tree)
    try:
        for first, *others in groups:
            for parts in others:
                _link_name_again(sources.directory(first[:-1]), first, targets.directory(parts[:-1]), parts, stage)
    finally:
        sources.close()
        targets.close()


def _link_name_again(source_dir: int, first: list[str], directory: int, parts: list[str], stage: Stage) -> None:
    source = os.stat(first[-1], dir_fd=source_dir, follow_symlinks=False)
    st = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
    if st.st_ino == source.st_ino or not stat.S_ISREG(st.st_mode) or not stat.S_ISREG(source.st_mode):
        return
    if (st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) != (
            source.st_size, source.st_mode, source.st_uid, source.st_gid, source.st_mtime_ns):
        return
    labels = [os.getxattr(f"/proc/self/fd/{fd}/{name}", SELINUX_XATTR, follow_symlinks=False)
              for fd, name in ((source_dir, first[-1]), (directory, parts[-1]))]
    if labels[0] != labels[1]:
        return
    times = os.stat(directory)
    temporary = f".osbuild-link-{parts[-1]}"[:255]
    try:
        os.link(first[-1], temporary, src_dir_fd=source_dir, dst_dir_fd=directory, follow_symlinks=False)
        os.rename(temporary, parts[-1], src_dir_fd=directory, dst_dir_fd=directory)
        os.utime(directory, ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError as e:
        raise BuildError(f"stage {stage.name} (id {stage.id}): linking /{'/'.join(parts)} to "
                         f"/{'/'.join(first)} again after labelling it: {e.strerror}") from e


def restore_engine_owned(layer: str) -> None:
    """Give what the overlay itself made in a layer (whiteouts) the owner it has without a user namespace: root."""
    for directory, dirs, files in os.walk(layer):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if sandbox.ENGINE_DISK_ID in (st.st_uid, st.st_gid):
                os.lchown(path, 0 if st.st_uid == sandbox.ENGINE_DISK_ID else st.st_uid,
                          0 if st.st_gid == sandbox.ENGINE_DISK_ID else st.st_gid)


def pipelines_needed(manifest: Manifest, targets: Collection[Pipeline]) -> list[Pipeline]:
    """The targets and everything they depend on, in build order."""
    needed: set[int] = set()
    todo = list(targets)
    while todo:
        pipeline = todo.pop()
        if id(pipeline) in needed:
            continue
        needed.add(id(pipeline))
        if pipeline.build is not None:
            todo.append(pipeline.build)
        for stage in pipeline.stages:
            todo.extend(stage.pipelines_read)
    return [p for p in manifest.pipelines if id(p) in needed]


class Builder:
    """Runs a manifest's pipelines against a store, reporting to a monitor."""

    def __init__(self, manifest: Manifest, store: ObjectStore, libdir: str, monitor: Monitor) -> None:
        self.manifest = manifest
        self.store = store
        self.libdir = libdir
        self.monitor = monitor
        self.workspace: Workspace = store.workspace
        self.result = BuildResult()
        self._build_roots: dict[str, str] = {}
        self._sources = ""
        self._protect: set[str] = set()
        self._identity: sandbox.Identity | None = None
        self._idmapped_layers: dict[str, str] = {}
        self._output: list[str] = []

    # -- the story -------------------------------------------------------------------

    def build(self, targets: Collection[Pipeline], exports: Collection[Pipeline] = (),
              output_directory: str | None = None, checkpoints: Collection[str] = ()) -> BuildResult:
        pipelines = pipelines_needed(self.manifest, targets)
        devices.refuse([(p.name, s) for p in pipelines for s in p.stages])
        total = sum(len(p.stages) for p in pipelines)
        index = 0
        # While building, eviction spares everything this manifest needs, not only what is in use yet.
        self._protect = {s.id for _, s in self.manifest.stages()} | set(checkpoints)
        self._identity = sandbox.Identity.create()
        try:
            sources.fetch(self.manifest, self.store, self.monitor, self.identity, self.workspace.subdir("fetch-binds"))
            self._sources = sources.view(self.manifest, self.store, self.workspace.subdir("sources"))
            self.monitor.begin(total, len(pipelines))
            for pipeline in pipelines:
                self.monitor.pipeline_start(pipeline.name, pipeline.id, len(pipeline.stages))
                for stage in pipeline.stages:
                    index += 1
                    self._stage(index, pipeline, stage)
            if output_directory is not None:
                for pipeline in exports:
                    self.result.exports[pipeline.name] = self.export(pipeline, output_directory)
        except StageFailed as e:
            self.result.success = False
            self.result.failure = e.failure
        finally:
            self._release_mounts()
            self._identity.close()
            self._identity = None
            # Objects this build used are still held: the limit takes older objects, never the new ones.
            self.store.evict(protect=checkpoints)
        return self.result

    @property
    def identity(self) -> sandbox.Identity:
        assert self._identity is not None, "only during build()"
        return self._identity

    def _stage(self, index: int, pipeline: Pipeline, stage: Stage) -> None:
        """Take the stage's object from the store, or build and commit it."""
        start = time.monotonic()
        base = self._base(pipeline, stage)
        status = "cached"
        self._output = []
        if not (self.store.has(stage.id) and self.store.hold(stage.id)):
            with self.store.building(stage.id) as claim:
                if claim.needed:
                    self.monitor.stage_start(index, pipeline.name, stage.name, stage.id)
                    self._run(pipeline, stage, base)
                    status = "built"
        info = self.store.info(stage.id)
        result = StageResult(pipeline.name, stage.name, stage.id, status, time.monotonic() - start,
                             info.metadata, info.changes, "\n".join(self._output))
        self.result.stages.append(result)
        self.monitor.stage_end(index, pipeline.name, stage.name, stage.id, status, result.duration,
                               info.changes if status == "built" else None, result.output)
        if status == "built":
            self.store.evict(protect=self._protect)

    @staticmethod
    def _base(pipeline: Pipeline, stage: Stage) -> str | None:
        """The object a stage's tree starts from: the previous stage's, or none."""
        position = pipeline.stages.index(stage)
        if stage.kind == "assembler" or position == 0:
            return None
        return pipeline.stages[position - 1].id

    # -- one stage in a sandbox ------------------------------------------------------

    def _run(self, pipeline: Pipeline, stage: Stage, base: str | None) -> None:
        work = self._scratch(stage.id)
        tree = os.path.join(work, "tree")
        os.mkdir(tree)
        api = os.path.join(work, "api")
        os.mkdir(api)
        meta_file = os.path.join(work, "meta.json")
        open(meta_file, "w").close()
        nodes_file = os.path.join(work, "device-nodes")
        open(nodes_file, "w").close()
        labels_file = os.path.join(work, "selinux-labels")
        open(labels_file, "w").close()
        arguments: dict[str, Any] = {
            "tree": TREE,
            "options": stage.options,
            "meta": {"id": stage.id, "source-epoch": pipeline.source_epoch},
            # Format 2's arguments, as osbuild's stages read them (empty for a format-1 stage).
            "paths": {"inputs": inputs.INPUTS_DIR, "devices": DEVICES_DIR, "mounts": MOUNTS_DIR},
            "inputs": {}, "devices": {}, "mounts": {},
        }
        binds = [sandbox.Bind(api, API_DIR), sandbox.Bind(meta_file, META_FILE, readonly=False, idmapped=True),
                 sandbox.Bind(self._sources, SOURCES_DIR)]
        layer_mount = None
        if stage.kind != "assembler":
            binds.append(sandbox.Bind(nodes_file, DEVICE_NODES_FILE, readonly=False, idmapped=True))
            binds.append(sandbox.Bind(labels_file, SELINUX_LABELS_FILE, readonly=False, idmapped=True))
        if stage.kind == "assembler":
            result_dir = os.path.join(work, "output")
            os.mkdir(result_dir)
            self._mount_readonly(stage.inputs["tree"].pipelines[0].id, tree, idmapped=True)
            binds += [sandbox.Bind(tree, TREE), sandbox.Bind(result_dir, OUTPUT_DIR, readonly=False, idmapped=True)]
            arguments["output_dir"] = OUTPUT_DIR
        else:
            layer = os.path.join(work, "layer")
            layer_mount = os.path.join(work, "layer-idmapped")
            result_dir = os.path.join(layer, "upper")
            self._mount_writable(base, layer, layer_mount, tree)
            binds.append(sandbox.Bind(tree, TREE, readonly=False))
            if stage.inputs:
                arguments["inputs"] = self._map_inputs(stage, work)
                binds.append(sandbox.Bind(os.path.join(work, "inputs"), inputs.INPUTS_DIR))
        services = devices.HostServices(tree, os.path.join(work, "mounts"), show=self.identity.idmap)
        if stage.devices or stage.mounts:
            try:
                os.mkdir(services.mounts_dir)
                arguments["devices"], arguments["mounts"] = services.open(stage)
            except BaseException:
                services.close()
                umount(tree)
                raise
            binds += [sandbox.Bind(self.identity.device_node(path, work), path, device=True)
                      for path in services.device_paths.values()]
            binds.append(sandbox.Bind(services.mounts_dir, MOUNTS_DIR, readonly=False, idmapped=True))
        with open(os.path.join(api, "arguments"), "w", encoding="utf-8") as f:
            json.dump(arguments, f)
        env = {}
        if pipeline.source_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(pipeline.source_epoch)
        config = sandbox.SandboxConfig(
            root=self._build_root(pipeline), runner=pipeline.runner.path, program=stage.info.path,
            identity=self.identity, staging=self._staging(work),
            binds=binds, env=env, network=stage.info.network, capabilities=stage.info.capabilities,
            writable_etc=pipeline.runner.writable_etc,
        )
        def on_output(line: str) -> None:
            self._output.append(line)
            self.monitor.stage_output(line)

        try:
            outcome = sandbox.run(config, json.dumps(arguments).encode(), on_output)
            if outcome.returncode == 0 and stage.kind != "assembler":
                make_device_nodes(tree, nodes_file, stage, self.identity)
                write_selinux_labels(tree, labels_file, stage, self.identity)
        finally:
            services.close()
            umount(tree)
            if layer_mount is not None:
                umount(layer_mount)
        if outcome.returncode != 0:
            failure = StageFailure(pipeline.name, stage.name, stage.id, outcome.returncode, outcome.tail,
                                   "\n".join(self._output))
            self.monitor.stage_failed(pipeline.name, stage.name, stage.id, outcome.returncode, outcome.tail)
            remove_tree(work)
            raise StageFailed(failure)
        metadata = self._read_metadata(meta_file, stage)
        if stage.kind != "assembler" and not self.identity.rootless:
            restore_engine_owned(result_dir)
        if pipeline.source_epoch is not None:
            clamp_times(result_dir, pipeline.source_epoch)
        lowers = self.store.layers(base) if base and stage.kind != "assembler" else [self._empty_dir()]
        change_list = treediff.layer_diff(result_dir, lowers, id_shift=self.identity.module_root)
        self.store.commit(result_dir, stage.id, kind=OUTPUT if stage.kind == "assembler" else LAYER,
                          parent=base, type=stage.name, metadata=metadata,
                          changes=treediff.summary(change_list), change_list=change_list)
        remove_tree(work)

    @staticmethod
    def _staging(work: str) -> str:
        path = os.path.join(work, "binds")
        os.mkdir(path)
        return path

    def _map_inputs(self, stage: Stage, work: str) -> dict[str, Any]:
        """Make every input of the stage under WORK/inputs (read-only trees and files); their arguments."""
        directory = os.path.join(work, "inputs")
        os.mkdir(directory)
        scratch_dirs = itertools.count()

        def scratch() -> str:
            path = os.path.join(work, f"input-tree-{next(scratch_dirs)}")
            os.mkdir(path)
            return path

        def source_path(checksum: str) -> str:
            return self.store.source_path(sources.FILES, checksum)

        def mount_tree(object_id: str | None, target: str) -> None:
            self._mount_readonly(object_id, target, idmapped=True)  # a module sees its input's owners

        return {name: inputs.map_input(item, os.path.join(directory, name), source_path, mount_tree, scratch)
                for name, item in sorted(stage.inputs.items())}

    def _scratch(self, name: str) -> str:
        path = os.path.join(self.workspace.path, "stage-" + name[:16])
        remove_tree(path)
        os.mkdir(path)
        return path

    @staticmethod
    def _read_metadata(path: str, stage: Stage) -> dict[str, Any]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BuildError(f"stage {stage.name} (id {stage.id}) wrote invalid metadata: {e}") from e
        if not isinstance(data, dict):
            raise BuildError(f"stage {stage.name} (id {stage.id}) wrote metadata that is not a JSON object")
        return data

    # -- trees as mounts -------------------------------------------------------------

    def _empty_dir(self, name: str = "empty") -> str:
        path = os.path.join(self.workspace.path, name)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o755)
            self.identity.own(path)  # an empty tree's root belongs to the module's root, as a tree's would
        return path

    def _idmapped(self, layer: str) -> str:
        """A read-only idmapped mount of a committed layer, made once per build (layers never change)."""
        if layer not in self._idmapped_layers:
            path = os.path.join(self.workspace.path, "idmapped", str(len(self._idmapped_layers)))
            os.makedirs(path)
            self.identity.idmap(layer, path, readonly=True)
            self._idmapped_layers[layer] = path
        return self._idmapped_layers[layer]

    def _release_mounts(self) -> None:
        for path in self._build_roots.values():
            umount(path)
        self._build_roots.clear()
        for path in self._idmapped_layers.values():
            umount(path)
        self._idmapped_layers.clear()

    def _mount_writable(self, base: str | None, layer: str, layer_mount: str, target: str) -> None:
        """Mount the tree of `base` with a fresh upper layer (layer/upper) that records every change.

        A module sees the tree through idmapped layers and writes it through an idmapped
        upper: its root's files land on disk owned by 0.
        """
        lowers = self.store.layers(base) if base else [self._empty_dir()]
        upper = os.path.join(layer, "upper")
        os.makedirs(upper)
        os.mkdir(os.path.join(layer, "work"))
        # The merged root takes its attributes from the upper dir: start it as the tree's root is.
        st = os.stat(lowers[0])
        os.chown(upper, st.st_uid, st.st_gid)
        os.chmod(upper, st.st_mode & 0o7777)
        os.mkdir(layer_mount)
        self.identity.idmap(layer, layer_mount, readonly=False)
        mount_overlay(target, [self._idmapped(lower) for lower in lowers],
                      os.path.join(layer_mount, "upper"), os.path.join(layer_mount, "work"), volatile=True,
                      userxattr=self.identity.rootless)

    def _mount_readonly(self, object_id: str | None, target: str, idmapped: bool = False) -> None:
        """Mount an object's complete tree read-only on target (an empty tree for None).

        idmapped: for a module's eyes (owners as on disk); otherwise for the engine's.
        """
        if object_id is None:
            lowers = [self._empty_dir()]
        elif self.store.info(object_id).kind == OUTPUT:
            lowers = [self.store.tree_path(object_id)]
        else:
            lowers = self.store.layers(object_id)
        if len(lowers) < 2:
            lowers.append(self._empty_dir("empty-bottom"))
        if idmapped:
            lowers = [self._idmapped(lower) for lower in lowers]
        mount_overlay(target, lowers, userxattr=sandbox.rootless())

    def _build_root(self, pipeline: Pipeline) -> str:
        """The root whose tools run the pipeline's stages: the build pipeline's tree, or the host."""
        if pipeline.build is None:
            return "/"
        object_id = pipeline.build.id
        key = object_id or "empty"
        if key not in self._build_roots:
            path = os.path.join(self.workspace.path, "buildroot-" + key[:16])
            os.mkdir(path)
            self._mount_readonly(object_id, path, idmapped=True)
            sandbox.check_build_root(path, f"the build root of pipeline {pipeline.name} (pipeline {pipeline.build.name})")
            self._build_roots[key] = path
        return self._build_roots[key]

    # -- results ---------------------------------------------------------------------

    def export(self, pipeline: Pipeline, output_directory: str) -> str:
        """Copy a pipeline's result (its tree, or its output files) to OUTPUT/NAME, replacing what was there.

        Atomic: OUTPUT/NAME is the old result or the new one, never a mix (see exports.py).
        """
        destination = os.path.join(output_directory, pipeline.name)
        try:
            os.makedirs(output_directory, exist_ok=True)
        except OSError as e:
            raise UserError(f"output directory {output_directory}: {e.strerror}") from e
        if pipeline.id and exports.holds(output_directory, pipeline.name, pipeline.id):
            return destination
        staging = staging_path(output_directory, pipeline.name)
        try:
            remove_stale_exports(output_directory)
            exports.forget(output_directory, pipeline.name)
            remove_tree(staging)
            os.mkdir(staging)
        except OSError as e:
            raise UserError(f"output directory {output_directory}: {e.strerror}") from e
        source = self.store.tree_path(pipeline.id) if pipeline.id and pipeline.produces_output else None
        mounted = None
        if source is None:
            mounted = os.path.join(self.workspace.path, "export-" + pipeline.name)
            os.makedirs(mounted, exist_ok=True)
            self._mount_readonly(pipeline.id, mounted)
            source = mounted
        try:
            subprocess.run(["cp", "-a", "--reflink=auto", source + "/.", staging], check=True)
            if sandbox.rootless() and mounted is None:
                # Image files belong to the user who built them; a tree keeps its owners (shifted on disk).
                subprocess.run(["chown", "-R", "0:0", staging], check=True)
        finally:
            if mounted:
                umount(mounted)
        replace_atomically(staging, destination)
        if pipeline.id:
            exports.record(output_directory, pipeline.name, pipeline.id)
        return destination
