"""Every stage's format-2 contract: a schema_2 whose parts are valid JSON Schemas that refuse unknown options."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from conftest import REPO

from osbuild.meta import Index

STAGES = sorted(path.name[: -len(".meta.json")] for path in (REPO / "stages").glob("*.meta.json"))
# Stages whose options are free-form on purpose.
OPEN_OPTIONS = {"org.osbuild.noop"}


def meta(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "stages" / f"{name}.meta.json").read_text())
    return data


def test_the_stages_are_found():
    assert len(STAGES) >= 37
    assert {"org.osbuild.chmod", "org.osbuild.copy", "org.osbuild.systemd.unit.create"} <= set(STAGES)


@pytest.mark.parametrize("name", STAGES)
def test_schema_2_is_valid_and_strict(name: str):
    schema_2 = meta(name)["schema_2"]
    assert set(schema_2) <= {"options", "inputs", "devices", "mounts"}
    for part, schema in schema_2.items():
        jsonschema.Draft7Validator.check_schema(schema)
        assert "$ref" not in json.dumps(schema), f"{part}: a $ref would depend on where the engine puts the schema"
    options = schema_2["options"]
    assert options["type"] == "object"
    if name not in OPEN_OPTIONS:
        assert options["additionalProperties"] is False
        assert jsonschema.Draft7Validator(options).is_valid({"an-option-no-stage-has": 1}) is False


@pytest.mark.parametrize("name", STAGES)
def test_the_engine_loads_the_meta_file(name: str):
    info = Index(str(REPO)).get("stage", name)
    assert info is not None
    assert info.summary


def test_an_input_the_compressors_need_is_declared():
    for name in ("org.osbuild.gzip", "org.osbuild.xz", "org.osbuild.zstd"):
        inputs = meta(name)["schema_2"]["inputs"]
        assert inputs["required"] == ["file"]
        assert jsonschema.Draft7Validator(inputs).is_valid({}) is False


def test_format_1_examples_are_valid_in_format_2_where_the_options_are_the_same():
    """Where osbuild's stage reads the same options in both formats, a format-1 example is valid in format 2."""
    examples = {
        "org.osbuild.hostname": {"hostname": "box"},
        "org.osbuild.timezone": {"zone": "Europe/Prague"},
        "org.osbuild.locale": {"language": "nn_NO.utf8"},
        "org.osbuild.mkdir": {"paths": [{"path": "/a", "mode": 448, "parents": True}]},
        "org.osbuild.systemd": {"enabled_services": ["nftables"], "masked_generators": ["systemd-sysv-generator"]},
        "org.osbuild.copy": {"files": [{"path": "/etc/motd", "text": "hi\n"}]},
        "org.osbuild.truncate": {"filename": "disk.img", "size": "10G"},
    }
    for name, options in examples.items():
        assert jsonschema.Draft7Validator(meta(name)["schema"]).is_valid(options), name
        assert jsonschema.Draft7Validator(meta(name)["schema_2"]["options"]).is_valid(options), name
