"""The manifest model (Manifest, Pipeline, Stage, Input, Device, Mount) and the ids that name every tree.

Formats load into this model; the builder runs it. Ids are computed here and
nowhere else; docs/ids.md describes the algorithm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from osbuild.meta import ModuleInfo


def canonical_json(value: Any) -> bytes:
    """The one serialization ids are computed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


TREE_INPUT = "org.osbuild.tree"
FILES_INPUT = "org.osbuild.files"
SOURCE_ORIGIN = "org.osbuild.source"
PIPELINE_ORIGIN = "org.osbuild.pipeline"


@dataclass(eq=False)
class Reference:
    """One thing an input provides: a source file by checksum, or another pipeline's tree (or a file in it)."""

    options: dict[str, Any] = field(default_factory=dict)
    checksum: str | None = None
    pipeline: Pipeline | None = None

    @property
    def key(self) -> str | None:
        """What the reference stands for in an id: the file's checksum or the tree's id."""
        return self.checksum if self.pipeline is None else self.pipeline.id


@dataclass(eq=False)
class Input:
    """Something a stage reads besides its own tree, by the name the stage knows it under."""

    name: str
    type: str                         # org.osbuild.files or org.osbuild.tree
    origin: str                       # org.osbuild.source or org.osbuild.pipeline
    references: list[Reference] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def pipelines(self) -> list[Pipeline]:
        return [r.pipeline for r in self.references if r.pipeline is not None]

    @classmethod
    def tree(cls, name: str, pipeline: Pipeline) -> Input:
        """A pipeline's whole tree, read-only."""
        return cls(name, TREE_INPUT, PIPELINE_ORIGIN, [Reference(pipeline=pipeline)])


@dataclass(eq=False)
class Device:
    """A device the engine opens on the host for a stage (a loop device over a file in the tree)."""

    name: str
    type: str
    parent: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Mount:
    """A filesystem the engine mounts on the host for a stage, from one of its devices."""

    name: str
    type: str
    source: str | None = None         # the device's name
    target: str | None = None
    partition: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Stage:
    """One run of a module (stage or assembler) with its options."""

    info: ModuleInfo
    options: dict[str, Any]
    # What the stage reads besides its own tree, by input name (an assembler's "tree").
    inputs: dict[str, Input] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    id: str = ""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def pipelines_read(self) -> list[Pipeline]:
        """The other pipelines whose trees this stage reads through its inputs."""
        return [p for i in self.inputs.values() for p in i.pipelines]


@dataclass(eq=False)
class Pipeline:
    """Stages applied in order to one tree, with the tools of a build root."""

    name: str
    runner: ModuleInfo
    build: Pipeline | None = None
    stages: list[Stage] = field(default_factory=list)
    source_epoch: int | None = None
    # The runner of the pipelines built with this one (format 2's `runner`: it says what this tree is).
    provides_runner: str | None = None

    @property
    def id(self) -> str | None:
        """The id of the pipeline's final tree; None for an empty pipeline."""
        return self.stages[-1].id if self.stages else None

    @property
    def produces_output(self) -> bool:
        """True when the pipeline ends in an assembler (its object is a directory of files)."""
        return bool(self.stages) and self.stages[-1].kind == "assembler"


@dataclass(eq=False)
class Source:
    """Files a manifest needs, by checksum, and the module that fetches them."""

    info: ModuleInfo
    options: dict[str, Any]
    items: dict[str, dict[str, Any]]   # checksum -> {"url": ...} or {"encoding": ..., "data": ...}


@dataclass(eq=False)
class Manifest:
    """Pipelines in build order (every pipeline after those it depends on), and sources."""

    host_runner: ModuleInfo
    library: str = ""                  # digest of the engine modules stages may import
    pipelines: list[Pipeline] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)

    def get(self, name: str) -> Pipeline | None:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        return None

    def stages(self) -> list[tuple[Pipeline, Stage]]:
        """Every stage of every pipeline, in build order."""
        return [(p, s) for p in self.pipelines for s in p.stages]

    def compute_ids(self) -> None:
        """Name every stage's result; pipelines must be in build order."""
        for pipeline in self.pipelines:
            base: str | None = None
            for stage in pipeline.stages:
                stage.id = stage_id(stage, base, pipeline, self.library)
                base = stage.id


def stage_id(stage: Stage, base: str | None, pipeline: Pipeline, library: str = "") -> str:
    """The id of the tree (or output) a stage produces.

    A hash over everything that decides the result: the module and a digest of
    its implementation and of the engine modules it may import, the options, the tree it starts from, the build root
    and its runner, its inputs (files by checksum, trees by id), devices and mounts, and the source epoch.
    Pipeline names never enter it.
    """
    if any(p.id is None and p.stages for p in stage.pipelines_read):
        raise ValueError("inputs must have ids before the stages that read them")
    record: dict[str, Any] = {
        "kind": stage.kind,
        "type": stage.name,
        "implementation": stage.info.digest,
        "library": library,
        "options": stage.options,
        "base": base,
        "build": pipeline.build.id if pipeline.build else None,
        "runner": {"name": pipeline.runner.name, "implementation": pipeline.runner.digest},
        "inputs": {name: _input_record(i) for name, i in sorted(stage.inputs.items())},
        "source-epoch": pipeline.source_epoch,
    }
    # Only stages that use them have these keys, so format-1 ids stay what they were.
    if stage.devices:
        record["devices"] = {name: {"type": d.type, "parent": d.parent, "options": d.options}
                             for name, d in stage.devices.items()}
    if stage.mounts:
        record["mounts"] = [{"name": m.name, "type": m.type, "source": m.source, "target": m.target,
                             "partition": m.partition, "options": m.options} for m in stage.mounts]
    return hashlib.sha256(canonical_json(record)).hexdigest()


def _input_record(item: Input) -> Any:
    """An input in an id: a plain tree is its tree's id; anything else, what it is and every reference."""
    if (item.type == TREE_INPUT and not item.options and len(item.references) == 1
            and item.references[0].pipeline is not None and not item.references[0].options):
        return item.references[0].key
    return {"type": item.type, "origin": item.origin, "options": item.options,
            "references": [[r.key, r.options] for r in item.references]}
