"""Format 2: today's osbuild manifest, a list of named pipelines.

    {"version": "2",
     "sources": {"org.osbuild.curl": {"items": {CHECKSUM: URL | {"url", "insecure"}}},
                 "org.osbuild.inline": {"items": {CHECKSUM: {"encoding", "data"}}}},
     "pipelines": [{"name", "build": "name:PIPELINE", "runner", "source-epoch",
                    "stages": [{"type", "options", "inputs", "devices", "mounts"}]}],
     "metadata": {...}}

A pipeline names an earlier one as its build root (`build`); `runner` on a
pipeline is the runner of the pipelines built with it, which says what its tree
is. Inputs name sources by checksum and earlier pipelines as `name:PIPELINE`.
Nothing is built unless it is exported (`BUILDS_WITHOUT_EXPORT`). `metadata` is
accepted and ignored, as osbuild does.
"""

from __future__ import annotations

from typing import Any

from osbuild.formats.v1 import GENERIC_RUNNER, environment_epoch, new_manifest, runner_module
from osbuild.meta import Index, JsonPath, ModuleInfo, Problem, schema_problems
from osbuild.pipeline import (
    PIPELINE_ORIGIN,
    SOURCE_ORIGIN,
    TREE_INPUT,
    Device,
    Input,
    Manifest,
    Mount,
    Pipeline,
    Reference,
    Stage,
)

VERSION = "2"
# osbuild builds only what is exported; so does format 2 here.
BUILDS_WITHOUT_EXPORT = False
NAME_REF = "name:"
# Where a source lists its items: `items`, or `urls`, the name format 1 gave them, which osbuild still reads.
ITEMS_KEYS = ("items", "urls")
# Input, device and mount names become paths (/run/osbuild/inputs/NAME): no slashes, no dot-dot.
ITEM_NAME = "^[A-Za-z][A-Za-z0-9_.-]{0,254}$"

_OBJECT = {"type": "object"}
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["version"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": VERSION},
        "pipelines": {"type": "array", "items": _OBJECT},
        "sources": {"type": "object", "additionalProperties": _OBJECT},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "generators": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "exports": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            },
        },
    },
}
PIPELINE_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        # A name is a directory of the output directory when exported: no slashes, not . or ..
        "name": {"type": "string", "pattern": "^(?![.]{1,2}$)[^/\\x00]+$"},
        "build": {"type": "string", "pattern": "^name:"},
        # Any osbuild runner name: one this library lacks runs with its closest (formats.v1.runner_module).
        "runner": {"type": "string", "pattern": "^org[.]osbuild[.][A-Za-z0-9_.-]+$"},
        "source-epoch": {"type": "integer", "minimum": 0},
        "stages": {"type": "array", "items": _OBJECT},
    },
}
STAGE_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string"},
        "options": _OBJECT,
        "inputs": {"type": "object", "propertyNames": {"pattern": ITEM_NAME}, "additionalProperties": _OBJECT},
        "devices": {"type": "object", "propertyNames": {"pattern": ITEM_NAME}, "additionalProperties": _OBJECT},
        "mounts": {"type": "array", "items": {"type": "object", "required": ["name", "type"],
                                              "properties": {"name": {"type": "string", "pattern": ITEM_NAME},
                                                             "type": {"type": "string"}}}},
    },
}


# -- validate ----------------------------------------------------------------------------


def validate(description: Any, index: Index, build: Any = None) -> list[Problem]:
    """Every problem in the manifest: structure, modules, options, and what names what."""
    if not isinstance(description, dict):
        return [Problem((), "a manifest must be a JSON object")]
    if build is not None:
        return [Problem((), "--build-pipeline is for format 1; a format-2 manifest names its build pipelines")]
    problems = schema_problems(description, MANIFEST_SCHEMA, ())
    sources = description.get("sources", {})
    checksums: set[str] = set()
    for name, source in sorted(sources.items() if isinstance(sources, dict) else []):
        info = index.get("source", name)
        if info is None:
            problems.append(Problem(("sources", name), f"unknown source {name!r}"))
        elif isinstance(source, dict):
            problems += info.validate_options(source, ("sources", name), version=2)
            for key in ITEMS_KEYS:
                if isinstance(source.get(key), dict):
                    checksums.update(source[key])
    pipelines = description.get("pipelines", [])
    earlier: set[str] = set()
    for i, pipeline in enumerate(pipelines if isinstance(pipelines, list) else []):
        path: JsonPath = ("pipelines", i)
        problems += _validate_pipeline(pipeline, path, index, earlier, checksums)
        name = pipeline.get("name") if isinstance(pipeline, dict) else None
        if isinstance(name, str):
            if name in earlier:
                problems.append(Problem((*path, "name"), f"a pipeline named {name!r} comes earlier: names must be unique"))
            earlier.add(name)
    return problems


def _validate_pipeline(pipeline: Any, path: JsonPath, index: Index, earlier: set[str], checksums: set[str]) -> list[Problem]:
    problems = schema_problems(pipeline, PIPELINE_SCHEMA, path)
    if not isinstance(pipeline, dict):
        return problems
    build = pipeline.get("build")
    if isinstance(build, str) and build.startswith(NAME_REF):
        problems += _pipeline_ref(build, (*path, "build"), earlier)
    stages = pipeline.get("stages", [])
    stages = stages if isinstance(stages, list) else []
    for i, stage in enumerate(stages):
        problems += _validate_stage(stage, (*path, "stages", i), index, earlier, checksums, len(stages))
    return problems


def _pipeline_ref(ref: str, path: JsonPath, earlier: set[str]) -> list[Problem]:
    if not ref.startswith(NAME_REF):
        return [Problem(path, f"{ref!r} is not a pipeline reference (name:PIPELINE)")]
    if ref[len(NAME_REF):] not in earlier:
        return [Problem(path, f"{ref!r} names no earlier pipeline (a pipeline can use only those before it)")]
    return []


def _stage_module(index: Index, name: str) -> ModuleInfo | None:
    """A stage, or a format-1 assembler used as a stage (its tree comes as the input `tree`)."""
    return index.get("stage", name) or index.get("assembler", name)


def _validate_stage(stage: Any, path: JsonPath, index: Index, earlier: set[str], checksums: set[str],
                    stages_in_pipeline: int) -> list[Problem]:
    problems = schema_problems(stage, STAGE_SCHEMA, path)
    if not isinstance(stage, dict) or not isinstance(stage.get("type"), str):
        return problems
    info = _stage_module(index, stage["type"])
    if info is None:
        return [*problems, Problem((*path, "type"), f"unknown stage {stage['type']!r}")]
    schemas = info.schema_2
    options = stage.get("options", {})
    if isinstance(options, dict):
        problems += info.validate_options(options, (*path, "options"), version=2)
    if info.kind == "assembler":
        problems += _validate_assembler(stage, path, stages_in_pipeline)
    for key in ("inputs", "devices", "mounts"):
        # A stage without inputs is checked as having none, so that one it requires is missed here.
        if key in schemas:
            problems += schema_problems(stage.get(key, [] if key == "mounts" else {}), schemas[key], (*path, key))
    inputs = stage.get("inputs", {})
    for name, item in sorted(inputs.items() if isinstance(inputs, dict) else []):
        problems += _validate_input(item, (*path, "inputs", name), index, earlier, checksums)
    devices = stage.get("devices", {})
    devices = devices if isinstance(devices, dict) else {}
    for name, device in sorted(devices.items()):
        problems += _validate_module_item("device", device, (*path, "devices", name), index)
        parent = device.get("parent") if isinstance(device, dict) else None
        if isinstance(parent, str) and (parent not in devices or parent == name):
            problems.append(Problem((*path, "devices", name, "parent"), f"no other device of this stage is named {parent!r}"))
    problems += _device_cycles(devices, (*path, "devices"))
    mounts = stage.get("mounts", [])
    seen: set[str] = set()
    for i, mount in enumerate(mounts if isinstance(mounts, list) else []):
        problems += _validate_module_item("mount", mount, (*path, "mounts", i), index)
        if not isinstance(mount, dict):
            continue
        source = mount.get("source")
        if isinstance(source, str) and source not in devices:
            problems.append(Problem((*path, "mounts", i, "source"), f"no device of this stage is named {source!r}"))
        name = mount.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(Problem((*path, "mounts", i, "name"), f"a mount named {name!r} comes earlier in this stage"))
            seen.add(name)
    return problems


def _validate_assembler(stage: dict[str, Any], path: JsonPath, stages_in_pipeline: int) -> list[Problem]:
    problems = []
    if stages_in_pipeline != 1:
        problems.append(Problem((*path, "type"), f"{stage['type']} is an assembler: it must be its pipeline's only stage"))
    inputs = stage.get("inputs")
    tree = inputs.get("tree") if isinstance(inputs, dict) else None
    if not isinstance(tree, dict) or tree.get("type") != TREE_INPUT or set(inputs or {}) != {"tree"}:
        problems.append(Problem((*path, "inputs"), f"{stage['type']} is an assembler: it takes one org.osbuild.tree input, "
                                                   "named tree, and nothing else"))
    return problems


def _device_cycles(devices: dict[str, Any], path: JsonPath) -> list[Problem]:
    for name in sorted(devices):
        seen = {name}
        current = devices[name]
        while isinstance(current, dict) and isinstance(current.get("parent"), str) and current["parent"] in devices:
            if current["parent"] in seen:
                return [Problem((*path, name, "parent"), "the devices' parents form a cycle")]
            seen.add(current["parent"])
            current = devices[current["parent"]]
    return []


def _validate_module_item(kind: str, item: Any, path: JsonPath, index: Index) -> list[Problem]:
    """An input, device or mount: its type is a module of that kind, and its description fits the module's schema."""
    if not isinstance(item, dict):
        return [Problem(path, f"{item!r} is not of type 'object'")]
    if not isinstance(item.get("type"), str):
        return [Problem(path, "'type' is a required property")]
    info = index.get(kind, item["type"])
    if info is None:
        known = ", ".join(index.names(kind)) or "none"
        return [Problem((*path, "type"), f"unknown {kind} {item['type']!r} (this library has: {known})")]
    return schema_problems(item, info.schema, path)


def _validate_input(item: Any, path: JsonPath, index: Index, earlier: set[str], checksums: set[str]) -> list[Problem]:
    problems = _validate_module_item("input", item, path, index)
    if problems:
        return problems
    for i, (ref, _) in enumerate(_references(item["references"])):
        where: JsonPath = (*path, "references", ref if isinstance(item["references"], dict) else i)
        if item["origin"] == PIPELINE_ORIGIN:
            problems += _pipeline_ref(ref, where, earlier)
        elif ref not in checksums:
            problems.append(Problem(where, f"{ref} is not among the manifest's sources"))
    return problems


def _references(refs: Any) -> list[tuple[str, dict[str, Any]]]:
    """osbuild's three forms of references (ids; {"id", "options"} objects; id -> options) as one list."""
    if isinstance(refs, dict):
        return [(ref, options) for ref, options in refs.items()]
    pairs: list[tuple[str, dict[str, Any]]] = []
    for ref in refs:
        if isinstance(ref, str):
            pairs.append((ref, {}))
        else:
            pairs.append((ref["id"], ref.get("options", {})))
    return pairs


# -- load --------------------------------------------------------------------------------


def load(description: dict[str, Any], index: Index, build: Any = None) -> Manifest:
    """The manifest model of a validated format-2 description."""
    manifest = new_manifest(index, description.get("sources", {}), *ITEMS_KEYS)
    default_epoch = environment_epoch()
    for pipeline in description.get("pipelines", []):
        manifest.pipelines.append(_load_pipeline(pipeline, manifest, index, default_epoch))
    manifest.compute_ids()
    return manifest


def _get(manifest: Manifest, ref: str) -> Pipeline:
    pipeline = manifest.get(ref[len(NAME_REF):])
    assert pipeline is not None, ref
    return pipeline


def _load_pipeline(description: dict[str, Any], manifest: Manifest, index: Index, default_epoch: int | None) -> Pipeline:
    build = _get(manifest, description["build"]) if "build" in description else None
    # A pipeline runs with the runner its build pipeline names; with the host as build root, the host's.
    if build is None:
        runner = manifest.host_runner
    else:
        runner = runner_module(index, build.provides_runner or GENERIC_RUNNER)
    pipeline = Pipeline(description["name"], runner=runner, build=build,
                        source_epoch=description.get("source-epoch", default_epoch),
                        provides_runner=description.get("runner"))
    for stage in description.get("stages", []):
        info = _stage_module(index, stage["type"])
        assert info is not None
        pipeline.stages.append(Stage(
            info, stage.get("options", {}),
            inputs={name: _load_input(name, item, manifest) for name, item in stage.get("inputs", {}).items()},
            devices={name: Device(name, d["type"], d.get("parent"), d.get("options", {}))
                     for name, d in stage.get("devices", {}).items()},
            mounts=[Mount(m["name"], m["type"], m.get("source"), m.get("target"), m.get("partition"), m.get("options", {}))
                    for m in stage.get("mounts", [])],
        ))
    return pipeline


def _load_input(name: str, description: dict[str, Any], manifest: Manifest) -> Input:
    by_key: dict[str, Reference] = {}
    for ref, options in _references(description["references"]):
        # A reference named twice counts once, its last options winning, as in osbuild.
        if description["origin"] == SOURCE_ORIGIN:
            by_key[ref] = Reference(dict(options), checksum=ref)
        else:
            by_key[ref] = Reference(dict(options), pipeline=_get(manifest, ref))
    return Input(name, description["type"], description["origin"], list(by_key.values()), description.get("options", {}))


# -- describe ----------------------------------------------------------------------------


def describe(manifest: Manifest, with_id: bool = False) -> dict[str, Any]:
    """The manifest in format 2, every default spelled out; with every stage's and pipeline's id when asked."""
    pipelines = []
    for pipeline in manifest.pipelines:
        entry: dict[str, Any] = {"name": pipeline.name}
        if with_id:
            entry["id"] = pipeline.id
        if pipeline.build is not None:
            entry["build"] = NAME_REF + pipeline.build.name
        if pipeline.provides_runner is not None:
            entry["runner"] = pipeline.provides_runner
        if pipeline.source_epoch is not None:
            entry["source-epoch"] = pipeline.source_epoch
        entry["stages"] = [_describe_stage(stage, with_id) for stage in pipeline.stages]
        pipelines.append(entry)
    result: dict[str, Any] = {"version": VERSION, "pipelines": pipelines}
    if manifest.sources:
        result["sources"] = {name: {"items": source.items} for name, source in manifest.sources.items()}
    return result


def _describe_stage(stage: Stage, with_id: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": stage.name}
    if with_id:
        entry["id"] = stage.id
    entry["options"] = stage.options
    if stage.inputs:
        entry["inputs"] = {name: _describe_input(item) for name, item in stage.inputs.items()}
    if stage.devices:
        entry["devices"] = {name: _omit_empty({"type": d.type, "parent": d.parent, "options": d.options})
                            for name, d in stage.devices.items()}
    if stage.mounts:
        entry["mounts"] = [_omit_empty({"name": m.name, "type": m.type, "source": m.source, "target": m.target,
                                        "partition": m.partition, "options": m.options}) for m in stage.mounts]
    return entry


def _describe_input(item: Input) -> dict[str, Any]:
    references = {}
    for ref in item.references:
        key = ref.checksum if ref.pipeline is None else NAME_REF + ref.pipeline.name
        assert key is not None
        references[key] = ref.options
    return _omit_empty({"type": item.type, "origin": item.origin, "references": references, "options": item.options})


def _omit_empty(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if value is not None and value != {}}


def result_ids(manifest: Manifest) -> dict[str, Any]:
    """Format 2's result carries no top-level ids (osbuild's does not): each pipeline has its own."""
    return {}

