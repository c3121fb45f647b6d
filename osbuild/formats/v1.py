"""Format 1: the original manifest.

    {"name": ..., "build": PIPELINE, "stages": [{"name", "options"}], "assembler": {"name", "options"}}

and the later format-1 shapes

    {"pipeline": PIPELINE, "sources": {...}}
    "build": {"pipeline": PIPELINE, "runner": "org.osbuild.NAME"}

Pipelines are named for `--export`: the main one "tree", its build pipeline
"build" (that one's build "build.build", and so on), and "assembler".

A pipeline's source epoch is its "source-epoch"; without one, SOURCE_DATE_EPOCH
from the environment. The manifest wins: what it says is part of its ids.
"""

from __future__ import annotations

import os
import re
from typing import Any

from osbuild.errors import UserError
from osbuild.meta import Index, JsonPath, ModuleInfo, Problem, schema_problems
from osbuild.pipeline import Input, Manifest, Pipeline, Source, Stage
from osbuild.sandbox import host_runner_name, library_digest

GENERIC_RUNNER = "org.osbuild.linux"
# Format 1 builds every pipeline when nothing is exported, as the original did.
BUILDS_WITHOUT_EXPORT = True
EPOCH = {"type": "integer", "minimum": 0}

_MODULE_CALL = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "options": {"type": "object"}},
}
PIPELINE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "build": {"type": "object"},
        "stages": {"type": "array", "items": _MODULE_CALL},
        "assembler": _MODULE_CALL,
        "source-epoch": EPOCH,
    },
}
BUILD_WRAPPER_SCHEMA = {
    "type": "object",
    "required": ["pipeline", "runner"],
    "additionalProperties": False,
    "properties": {"pipeline": {"type": "object"}, "runner": {"type": "string"}},
}
WRAPPED_SCHEMA = {
    "type": "object",
    "required": ["pipeline"],
    "additionalProperties": False,
    "properties": {"pipeline": {"type": "object"}, "sources": {"type": "object"}},
}


def _top_pipeline(description: dict[str, Any]) -> tuple[Any, JsonPath]:
    if "pipeline" in description:
        return description["pipeline"], ("pipeline",)
    return description, ()


def validate(description: Any, index: Index, build: Any = None) -> list[Problem]:
    """Every problem in the manifest (and the --build-pipeline file): structure, modules, options."""
    if not isinstance(description, dict):
        return [Problem((), "a manifest must be a JSON object")]
    problems: list[Problem] = []
    if "pipeline" in description:
        problems += schema_problems(description, WRAPPED_SCHEMA, ())
        sources = description.get("sources", {})
        for name, options in sorted(sources.items() if isinstance(sources, dict) else []):
            path: JsonPath = ("sources", name)
            info = index.get("source", name)
            if info is None:
                problems.append(Problem(path, f"unknown source {name!r}"))
            else:
                problems += info.validate_options(options, path)
    top, prefix = _top_pipeline(description)
    if isinstance(top, dict):
        problems += _validate_pipeline(top, prefix, index)
        if build is not None:
            if "build" in top:
                problems.append(Problem((*prefix, "build"),
                                        "the manifest has a build pipeline and --build-pipeline gives another"))
            else:
                problems += [Problem(p.path, p.message, origin="--build-pipeline") for p in _validate_build(build, (), index)]
    return problems


def _validate_build(build: Any, path: JsonPath, index: Index) -> list[Problem]:
    if not isinstance(build, dict):
        return [Problem(path, "a build pipeline must be a JSON object")]
    if "pipeline" in build:
        problems = schema_problems(build, BUILD_WRAPPER_SCHEMA, path)
        runner = build.get("runner")
        if isinstance(runner, str) and index.get("runner", runner) is None:
            problems.append(Problem((*path, "runner"), f"unknown runner {runner!r}"))
        if isinstance(build.get("pipeline"), dict):
            problems += _validate_pipeline(build["pipeline"], (*path, "pipeline"), index)
        return problems
    return _validate_pipeline(build, path, index)


def _validate_pipeline(pipeline: dict[str, Any], path: JsonPath, index: Index) -> list[Problem]:
    # Structural problems come first; the parts that are well-formed are still checked, so
    # one run reports every problem it can.
    problems = schema_problems(pipeline, PIPELINE_SCHEMA, path)
    if isinstance(pipeline.get("build"), dict):
        problems += _validate_build(pipeline["build"], (*path, "build"), index)
    stages = pipeline.get("stages", [])
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        problems += _validate_call("stage", stage, (*path, "stages", i), index)
    if "assembler" in pipeline:
        problems += _validate_call("assembler", pipeline["assembler"], (*path, "assembler"), index)
    return problems


def _validate_call(kind: str, call: Any, path: JsonPath, index: Index) -> list[Problem]:
    """The module's name and its options; a malformed call was reported by the pipeline's schema."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return []
    info = index.get(kind, call["name"])
    if info is None:
        hint = " (it is an assembler)" if kind == "stage" and index.get("assembler", call["name"]) else ""
        return [Problem((*path, "name"), f"unknown {kind} {call['name']!r}{hint}")]
    options = call.get("options", {})
    if not isinstance(options, dict):
        return []
    return info.validate_options(options, (*path, "options"))


def load(description: dict[str, Any], index: Index, build: Any = None) -> Manifest:
    """The manifest model of a validated format-1 description."""
    manifest = new_manifest(index, description.get("sources", {}), "urls")
    host_runner = manifest.host_runner
    top, _ = _top_pipeline(description)
    if build is not None:
        top = dict(top, build=build)
    tree = _load_pipeline(top, "tree", host_runner, manifest, index, environment_epoch())
    if "assembler" in top:
        call = top["assembler"]
        info = index.get("assembler", call["name"])
        assert info is not None
        stage = Stage(info, call.get("options", {}), inputs={"tree": Input.tree("tree", tree)})
        manifest.pipelines.append(Pipeline("assembler", runner=tree.runner, build=tree.build,
                                           stages=[stage], source_epoch=tree.source_epoch))
    manifest.compute_ids()
    return manifest


def new_manifest(index: Index, sources: dict[str, Any], *items_keys: str) -> Manifest:
    """An empty manifest with the host's runner and the sources of a description (their items under
    the first of items_keys a source has).

    An item that is a string is a URL; format 2 keeps the same shape for every file source.
    """
    manifest = Manifest(host_runner=runner_module(index, host_runner_name(index.names("runner"))), library=library_digest())
    for name, options in sorted(sources.items()):
        info = index.get("source", name)
        assert info is not None
        given: dict[str, Any] = next((options[key] for key in items_keys if key in options), {})
        items = {checksum: {"url": item} if isinstance(item, str) else dict(item) for checksum, item in sorted(given.items())}
        manifest.sources[name] = Source(info, options, items)
    return manifest


def runner_module(index: Index, name: str) -> ModuleInfo:
    """The runner of that name; else, as osbuild picks one, the same distribution's of the highest
    version not above it (org.osbuild.debian14 runs with debian13); else the generic one."""
    info = index.get("runner", name) or index.get("runner", _closest_runner(index, name) or GENERIC_RUNNER)
    if info is None:
        raise UserError(f"library directory {index.libdir} has no runner {name} nor {GENERIC_RUNNER}")
    return info


def _closest_runner(index: Index, name: str) -> str | None:
    wanted = _RUNNER_NAME.match(name)
    if wanted is None:
        return None
    best: tuple[int, str] | None = None
    for candidate in index.names("runner"):
        found = _RUNNER_NAME.match(candidate)
        if found and found["distro"] == wanted["distro"] and found["version"] and wanted["version"]:
            version = int(found["version"])
            if version <= int(wanted["version"]) and (best is None or version > best[0]):
                best = (version, candidate)
    return best[1] if best else None


_RUNNER_NAME = re.compile(r"^org\.osbuild\.(?P<distro>[a-z]+?)(?P<version>[0-9]*)$")


def environment_epoch() -> int | None:
    """SOURCE_DATE_EPOCH from the environment: the source epoch of pipelines that name none."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds since 1970")
    return int(value)


def _load_pipeline(description: dict[str, Any], name: str, host_runner: ModuleInfo, manifest: Manifest, index: Index,
                   default_epoch: int | None) -> Pipeline:
    build = None
    runner = host_runner
    if "build" in description:
        build_description = description["build"]
        runner_name = GENERIC_RUNNER
        if "pipeline" in build_description:
            runner_name = build_description["runner"]
            build_description = build_description["pipeline"]
        runner = runner_module(index, runner_name)
        build_name = "build" if name == "tree" else f"{name}.build"
        build = _load_pipeline(build_description, build_name, host_runner, manifest, index, default_epoch)
    stages = []
    for call in description.get("stages", []):
        info = index.get("stage", call["name"])
        assert info is not None
        stages.append(Stage(info, call.get("options", {})))
    pipeline = Pipeline(name, runner=runner, build=build, stages=stages,
                        source_epoch=description.get("source-epoch", default_epoch))
    manifest.pipelines.append(pipeline)
    return pipeline


def describe(manifest: Manifest, with_id: bool = False) -> dict[str, Any]:
    """The manifest in the normalized format-1 shape, with every id when asked."""
    tree = manifest.get("tree")
    assert tree is not None
    result: dict[str, Any] = {"pipeline": _describe_pipeline(tree, with_id)}
    assembler = manifest.get("assembler")
    if assembler is not None:
        result["pipeline"]["assembler"] = _describe_call(assembler.stages[0], with_id)
    if manifest.sources:
        result["sources"] = {name: source.options for name, source in manifest.sources.items()}
    if with_id:
        result["tree_id"] = tree.id
        result["output_id"] = assembler.id if assembler else None
    return result


def _describe_call(stage: Stage, with_id: bool) -> dict[str, Any]:
    call: dict[str, Any] = {"name": stage.name}
    if with_id:
        call["id"] = stage.id
    call["options"] = stage.options
    return call


def _describe_pipeline(pipeline: Pipeline, with_id: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if pipeline.build is not None:
        result["build"] = {"pipeline": _describe_pipeline(pipeline.build, with_id), "runner": pipeline.runner.name}
    if pipeline.source_epoch is not None:
        result["source-epoch"] = pipeline.source_epoch
    result["stages"] = [_describe_call(s, with_id) for s in pipeline.stages]
    return result


def result_ids(manifest: Manifest) -> dict[str, Any]:
    """The format-1 names of the final ids, as the original --json printed them."""
    tree = manifest.get("tree")
    assembler = manifest.get("assembler")
    return {"tree_id": tree.id if tree else None, "output_id": assembler.id if assembler else None}
