"""Build a manifest: for each stage, reuse its object from the store or run it in a sandbox and commit it.

Reading `Builder.build()` tells the whole story: fetch sources, then for every
pipeline in build order and every stage in it, take the object from the store
or build it, then export what was asked for.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from osbuild import devices, inputs, sandbox, sources, treediff
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
        try:
            sources.fetch(self.manifest, self.store, self.monitor)
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
            # Objects this build used are still held: the limit takes older objects, never the new ones.
            self.store.evict(protect=checkpoints)
        return self.result

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
        arguments: dict[str, Any] = {
            "tree": TREE,
            "options": stage.options,
            "meta": {"id": stage.id, "source-epoch": pipeline.source_epoch},
            # Format 2's arguments, as osbuild's stages read them (empty for a format-1 stage).
            "paths": {"inputs": inputs.INPUTS_DIR, "devices": DEVICES_DIR, "mounts": MOUNTS_DIR},
            "inputs": {}, "devices": {}, "mounts": {},
        }
        binds = [sandbox.Bind(api, API_DIR), sandbox.Bind(meta_file, META_FILE, readonly=False),
                 sandbox.Bind(self._sources, SOURCES_DIR)]
        if stage.kind == "assembler":
            result_dir = os.path.join(work, "output")
            os.mkdir(result_dir)
            self._mount_readonly(stage.inputs["tree"].pipelines[0].id, tree)
            binds += [sandbox.Bind(tree, TREE), sandbox.Bind(result_dir, OUTPUT_DIR, readonly=False)]
            arguments["output_dir"] = OUTPUT_DIR
        else:
            result_dir = os.path.join(work, "upper")
            self._mount_writable(base, result_dir, os.path.join(work, "work"), tree)
            binds.append(sandbox.Bind(tree, TREE, readonly=False))
            if stage.inputs:
                arguments["inputs"] = self._map_inputs(stage, work)
                binds.append(sandbox.Bind(os.path.join(work, "inputs"), inputs.INPUTS_DIR))
        services = devices.HostServices(tree, os.path.join(work, "mounts"))
        if stage.devices or stage.mounts:
            try:
                os.mkdir(services.mounts_dir)
                arguments["devices"], arguments["mounts"] = services.open(stage)
            except BaseException:
                services.close()
                umount(tree)
                raise
            binds += [sandbox.Bind(path, path, device=True) for path in services.device_paths.values()]
            binds.append(sandbox.Bind(services.mounts_dir, MOUNTS_DIR, readonly=False))
        with open(os.path.join(api, "arguments"), "w", encoding="utf-8") as f:
            json.dump(arguments, f)
        env = {}
        if pipeline.source_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(pipeline.source_epoch)
        config = sandbox.SandboxConfig(
            root=self._build_root(pipeline), runner=pipeline.runner.path, program=stage.info.path,
            binds=binds, env=env, network=stage.info.network, capabilities=stage.info.capabilities,
        )
        def on_output(line: str) -> None:
            self._output.append(line)
            self.monitor.stage_output(line)

        try:
            outcome = sandbox.run(config, json.dumps(arguments).encode(), on_output)
        finally:
            services.close()
            umount(tree)
        if outcome.returncode != 0:
            failure = StageFailure(pipeline.name, stage.name, stage.id, outcome.returncode, outcome.tail,
                                   "\n".join(self._output))
            self.monitor.stage_failed(pipeline.name, stage.name, stage.id, outcome.returncode, outcome.tail)
            remove_tree(work)
            raise StageFailed(failure)
        metadata = self._read_metadata(meta_file, stage)
        if pipeline.source_epoch is not None:
            clamp_times(result_dir, pipeline.source_epoch)
        lowers = self.store.layers(base) if base and stage.kind != "assembler" else [self._empty_dir()]
        change_list = treediff.layer_diff(result_dir, lowers)
        self.store.commit(result_dir, stage.id, kind=OUTPUT if stage.kind == "assembler" else LAYER,
                          parent=base, type=stage.name, metadata=metadata,
                          changes=treediff.summary(change_list), change_list=change_list)
        remove_tree(work)

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

        return {name: inputs.map_input(item, os.path.join(directory, name), source_path, self._mount_readonly, scratch)
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
        os.makedirs(path, mode=0o755, exist_ok=True)
        return path

    def _mount_writable(self, base: str | None, upper: str, work: str, target: str) -> None:
        """Mount the tree of `base` with a fresh upper layer that records every change."""
        lowers = self.store.layers(base) if base else [self._empty_dir()]
        os.mkdir(upper)
        os.mkdir(work)
        # The merged root takes its attributes from the upper dir: start it as the tree's root is.
        st = os.stat(lowers[0])
        os.chown(upper, st.st_uid, st.st_gid)
        os.chmod(upper, st.st_mode & 0o7777)
        mount_overlay(target, lowers, upper, work, volatile=True)

    def _mount_readonly(self, object_id: str | None, target: str) -> None:
        """Mount an object's complete tree read-only on target (an empty tree for None)."""
        if object_id is None:
            lowers = [self._empty_dir()]
        elif self.store.info(object_id).kind == OUTPUT:
            lowers = [self.store.tree_path(object_id)]
        else:
            lowers = self.store.layers(object_id)
        if len(lowers) < 2:
            lowers.append(self._empty_dir("empty-bottom"))
        mount_overlay(target, lowers)

    def _build_root(self, pipeline: Pipeline) -> str:
        """The root whose tools run the pipeline's stages: the build pipeline's tree, or the host."""
        if pipeline.build is None:
            return "/"
        object_id = pipeline.build.id
        key = object_id or "empty"
        if key not in self._build_roots:
            path = os.path.join(self.workspace.path, "buildroot-" + key[:16])
            os.mkdir(path)
            self._mount_readonly(object_id, path)
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
        staging = staging_path(output_directory, pipeline.name)
        try:
            remove_stale_exports(output_directory)
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
        finally:
            if mounted:
                umount(mounted)
        replace_atomically(staging, destination)
        return destination
