"""The samples stay valid: the default one once locked, the Fedora one but for the RPM stages it is waiting for."""

from __future__ import annotations

import json

from conftest import REPO, run_osbuild

SAMPLES = REPO / "samples"


def test_every_sample_is_json() -> None:
    for path in SAMPLES.glob("*.json"):
        json.loads(path.read_text())


def test_fedora_sample_lacks_only_the_rpm_stages() -> None:
    proc = run_osbuild("--inspect", str(SAMPLES / "fedora-30-qcow2.json"), check=False)
    assert proc.returncode == 2
    problems = sorted(line.split(": ", 2)[2] for line in proc.stderr.splitlines())
    assert problems == sorted([
        ".build.pipeline.stages[0].name: unknown stage 'org.osbuild.dnf'",
        ".stages[0].name: unknown stage 'org.osbuild.dnf'",
        ".stages[5].name: unknown stage 'org.osbuild.fix-bls'",
        ".stages[6].name: unknown stage 'org.osbuild.selinux'",
    ])
