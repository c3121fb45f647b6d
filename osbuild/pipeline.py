"""The manifest model (Manifest, Pipeline, Stage) and the ids that name every tree.

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


@dataclass(eq=False)
class Stage:
    """One run of a module (stage or assembler) with its options."""

    info: ModuleInfo
    options: dict[str, Any]
    # Other pipelines whose trees this stage reads, by input name (an assembler's "tree").
    inputs: dict[str, Pipeline] = field(default_factory=dict)
    id: str = ""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> str:
        return self.info.kind


@dataclass(eq=False)
class Pipeline:
    """Stages applied in order to one tree, with the tools of a build root."""

    name: str
    runner: ModuleInfo
    build: Pipeline | None = None
    stages: list[Stage] = field(default_factory=list)
    source_epoch: int | None = None

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
    items: dict[str, dict[str, Any]]   # checksum -> {"url": ...}


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
    and its runner, the trees it reads, and the source epoch.
    """
    if any(p.id is None and p.stages for p in stage.inputs.values()):
        raise ValueError("inputs must have ids before the stages that read them")
    record = {
        "kind": stage.kind,
        "type": stage.name,
        "implementation": stage.info.digest,
        "library": library,
        "options": stage.options,
        "base": base,
        "build": pipeline.build.id if pipeline.build else None,
        "runner": {"name": pipeline.runner.name, "implementation": pipeline.runner.digest},
        "inputs": {name: p.id for name, p in sorted(stage.inputs.items())},
        "source-epoch": pipeline.source_epoch,
    }
    return hashlib.sha256(canonical_json(record)).hexdigest()
