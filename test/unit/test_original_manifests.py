"""The original osbuild's own manifests (test/data/original, tag 3 of osbuild) validate as they were written.

The only errors left are stages this checkout lacks; org.osbuild.dnf and org.osbuild.yum come with the
RPM install path. Once they are here, every copy validates without an error.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from testlib import osbuild_argv, osbuild_env

ORIGINAL = Path(__file__).parent.parent / "data" / "original"
LIBDIR = Path(__file__).parent.parent.parent
MANIFESTS = sorted(str(path.relative_to(ORIGINAL)) for path in ORIGINAL.rglob("*.json"))
# The stages each manifest names that come with the RPM path (the `rpm` branch), by JSON path.
RPM_STAGES = {
    "samples/base-from-yum.json": {".build.stages[0].name": "org.osbuild.yum", ".stages[0].name": "org.osbuild.dnf"},
    "samples/base-qcow2.json": {".stages[0].name": "org.osbuild.dnf"},
    "samples/base.json": {".stages[0].name": "org.osbuild.dnf"},
    "samples/build-from-yum.json": {".stages[0].name": "org.osbuild.yum"},
    "samples/noop.json": {},
    "test/pipelines/f30-boot.json": {".build.stages[0].name": "org.osbuild.dnf", ".stages[0].name": "org.osbuild.dnf"},
    "test/pipelines/firewall.json": {".stages[0].name": "org.osbuild.dnf"},
    "test/pipelines/locale.json": {".stages[0].name": "org.osbuild.dnf"},
    "test/pipelines/timezone.json": {".stages[0].name": "org.osbuild.dnf"},
}


def test_every_copy_is_listed():
    assert sorted(RPM_STAGES) == MANIFESTS


@pytest.mark.parametrize("name", MANIFESTS)
def test_original_manifest_validates(name):
    path = ORIGINAL / name
    proc = subprocess.run([*osbuild_argv("--libdir", str(LIBDIR), "--inspect", str(path))], capture_output=True,
                          text=True, check=False, env=osbuild_env())
    assert "Traceback" not in proc.stderr
    present = {stage for stage in RPM_STAGES[name].values() if (LIBDIR / "stages" / stage).exists()}
    expected = [f"error: {path}: {where}: unknown stage {stage!r}"
                for where, stage in RPM_STAGES[name].items() if stage not in present]
    errors = [line for line in proc.stderr.splitlines() if re.match(r"error: ", line)]
    assert errors == expected, proc.stderr
    assert proc.returncode == (2 if expected else 0), proc.stderr
