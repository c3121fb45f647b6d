"""Modules in the library directory: find them, read their meta files, validate options.

A module is an executable `DIR/NAME` with a sidecar `DIR/NAME.meta.json`, where
DIR is `stages`, `assemblers`, `sources` or `runners`. The meta file is the
module's contract: a summary, a description, the JSON Schema of its options
(`schema` for format 1, `schema_2` for format 2), and what it needs from the
sandbox (network, capabilities; a runner's meta may ask for a writable /etc).

Format 2's inputs, devices and mounts (`inputs/`, `devices/`, `mounts/`) are
done by the engine on the host side, never by code from the library directory:
for them the meta file alone is the module (its `schema` validates the whole
input, device or mount description of a stage).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import jsonschema

from osbuild.errors import UserError

KIND_DIRS = {
    "stage": "stages",
    "assembler": "assemblers",
    "source": "sources",
    "runner": "runners",
    "input": "inputs",
    "device": "devices",
    "mount": "mounts",
}
# Kinds the engine implements itself: a meta file is the whole module.
HOST_KINDS = ("input", "device", "mount")

# Capabilities a stage may ask for beyond the sandbox's default set.
GRANTABLE_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_MKNOD", "CAP_MAC_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE")

META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "description"],
    "additionalProperties": False,
    "properties": {
        "summary": {"type": "string", "minLength": 1},
        "description": {"type": "array", "items": {"type": "string"}},
        "network": {"type": "boolean"},
        "capabilities": {"type": "array", "items": {"enum": list(GRANTABLE_CAPABILITIES)}},
        # Runners only: /etc is a throwaway writable copy of the build root's (sandbox._copy_etc).
        "writable_etc": {"type": "boolean"},
        "schema": {"type": "object"},
        "schema_2": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "options": {"type": "object"},
                "inputs": {"type": "object"},
                "devices": {"type": "object"},
                "mounts": {"type": "object"},
            },
        },
    },
}


# A place in a JSON document: object keys and array indexes, outermost first.
JsonPath = tuple[Union[str, int], ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where (the parts of a JSON path) and what.

    `origin` names a file other than the manifest (`--build-pipeline`) the path is in.
    """

    path: JsonPath
    message: str
    origin: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    @property
    def where(self) -> str:
        """The path as `.stages[1].options.name`; `.` for the document itself."""
        return self.origin + json_path(self.path) if self.origin or self.path else "."

    def as_json(self) -> dict[str, Any]:
        """osbuild's shape of one validation error: the message and the path as a list of parts."""
        return {"message": self.message, "path": list(self.path)}


def json_path(parts: Iterable[Any]) -> str:
    """Render path parts as `.stages[1].options.name`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


MESSAGE_LIMIT = 200


@functools.cache
def ecma_pattern(pattern: str) -> str:
    """A Python regex that gives `pattern` JSON Schema's (ECMA 262) meaning of `$`.

    Python's `$` also matches before a final newline, so "box\n" would pass "^[a-z]+$";
    every `$` outside a character class becomes `$(?!\n)`, which matches only at the end.
    """
    out = []
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            out.append("$(?!\n)")
            continue
        out.append(char)
    return "".join(out)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if isinstance(instance, str) and not re.search(ecma_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validator_class(schema: dict[str, Any]) -> Any:
    return _with_our_pattern(jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator))


@functools.cache
def _with_our_pattern(cls: Any) -> Any:
    """The validator class with our `pattern`, made once per draft: making a class costs milliseconds (attrs
    compiles its methods), and a manifest's validation asks for one per stage and module."""
    return jsonschema.validators.extend(cls, {"pattern": _pattern})


def schema_problems(instance: Any, schema: dict[str, Any], prefix: JsonPath) -> list[Problem]:
    """Validate instance against schema; each error becomes a Problem under prefix."""
    validator = _validator_class(schema)(schema)
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(Problem(prefix + tuple(error.absolute_path), _message(error)))
    return problems


def _message(error: jsonschema.ValidationError) -> str:
    """A short message for one schema error; oneOf/anyOf errors name the closest branch."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        error = jsonschema.exceptions.best_match(error.context)
    message = str(error.message)
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3] + "..."


def _check_options_schema(schema: dict[str, Any], meta_path: str, where: str = ".schema") -> None:
    """Refuse a module whose options schema is not a valid JSON Schema, naming where it is wrong."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    try:
        cls.check_schema(schema)
        # Older jsonschema releases do not check that patterns are regular expressions.
        for pattern in _patterns(schema):
            re.compile(pattern)
    except jsonschema.SchemaError as e:
        raise UserError(f"{meta_path}: invalid options schema at {where}{json_path(e.absolute_path)}: {e.message}") from e
    except re.error as e:
        raise UserError(f"{meta_path}: invalid options schema: pattern {e.pattern!r}: {e}") from e


def _patterns(schema: Any) -> Iterator[str]:
    """Every `pattern` string in a schema, at any depth."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _patterns(item)


@dataclass(frozen=True)
class ModuleInfo:
    """A module found in the library directory, with its meta file read."""

    kind: str
    name: str
    path: str
    meta: dict[str, Any] = field(repr=False)
    digest: str

    @property
    def summary(self) -> str:
        return str(self.meta.get("summary", ""))

    @property
    def network(self) -> bool:
        return bool(self.meta.get("network", False))

    @property
    def capabilities(self) -> list[str]:
        return list(self.meta.get("capabilities", []))

    @property
    def writable_etc(self) -> bool:
        return bool(self.meta.get("writable_etc", False))

    @property
    def schema(self) -> dict[str, Any]:
        schema = self.meta.get("schema")
        if schema is None:
            return {"type": "object", "additionalProperties": False}
        return dict(schema)

    @property
    def schema_2(self) -> dict[str, Any]:
        """The format-2 schemas (`options`, `inputs`, `devices`, `mounts`); options default to `schema`."""
        schemas = dict(self.meta.get("schema_2", {}))
        schemas.setdefault("options", self.schema)
        return schemas

    def validate_options(self, options: Any, path: JsonPath, version: int = 1) -> list[Problem]:
        schema = self.schema if version == 1 else self.schema_2["options"]
        return schema_problems(options, schema, path)


class Index:
    """The modules of one library directory, loaded on first use."""

    def __init__(self, libdir: str) -> None:
        self.libdir = os.path.abspath(libdir)
        if not os.path.isdir(os.path.join(self.libdir, "stages")):
            raise UserError(f"library directory {libdir} has no stages/ directory (use --libdir to point at one)")
        self._cache: dict[tuple[str, str], ModuleInfo | None] = {}

    def names(self, kind: str) -> list[str]:
        """Names of every module of a kind, sorted."""
        directory = os.path.join(self.libdir, KIND_DIRS[kind])
        if not os.path.isdir(directory):
            return []
        if kind in HOST_KINDS:
            return sorted(name[: -len(".meta.json")] for name in os.listdir(directory) if name.endswith(".meta.json"))
        return sorted(
            name for name in os.listdir(directory)
            if not name.endswith(".meta.json") and os.path.isfile(os.path.join(directory, name))
        )

    def get(self, kind: str, name: str) -> ModuleInfo | None:
        """The module of that kind and name, or None when there is none."""
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = self._load(kind, name)
        return self._cache[key]

    def _load(self, kind: str, name: str) -> ModuleInfo | None:
        if "/" in name or "\0" in name or name.startswith("."):
            return None
        path = os.path.join(self.libdir, KIND_DIRS[kind], name)
        meta_path = path + ".meta.json"
        digest = hashlib.sha256()
        if kind in HOST_KINDS:
            if not os.path.isfile(meta_path):
                return None
        elif not os.path.isfile(path):
            return None
        else:
            with open(path, "rb") as f:
                digest.update(f.read())
        meta: dict[str, Any] = {}
        if os.path.exists(meta_path):
            with open(meta_path, "rb") as f:
                raw = f.read()
            digest.update(raw)
            try:
                meta = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{meta_path}: invalid JSON: {e}") from e
            problems = schema_problems(meta, META_SCHEMA, ())
            if problems:
                raise UserError(f"{meta_path}: {problems[0]}")
            if "writable_etc" in meta and kind != "runner":
                raise UserError(f"{meta_path}: writable_etc is for runners only (it prepares a build root's /etc)")
            if "schema" in meta:
                _check_options_schema(meta["schema"], meta_path)
            for key, schema in sorted(meta.get("schema_2", {}).items()):
                _check_options_schema(schema, meta_path, f".schema_2.{key}")
        elif kind != "runner":
            raise UserError(f"module {name} has no meta file {meta_path}")
        return ModuleInfo(kind=kind, name=name, path=path, meta=meta, digest="sha256:" + digest.hexdigest())
