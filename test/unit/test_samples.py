"""The samples stay valid: the default one once locked, the Fedora one but for the RPM stages it is waiting for."""

from __future__ import annotations

import json

from conftest import REPO, run_osbuild

SAMPLES = REPO / "samples"


def test_every_sample_is_json() -> None:
    for path in SAMPLES.glob("*.json"):
        json.loads(path.read_text())


def test_fedora_sample_lacks_only_the_stages_not_written_yet() -> None:
    proc = run_osbuild("--inspect", str(SAMPLES / "fedora-30-qcow2.json"), check=False)
    missing = {5: "org.osbuild.fix-bls", 6: "org.osbuild.selinux"}
    expected = sorted(f".stages[{i}].name: unknown stage '{name}'" for i, name in missing.items()
                      if not (REPO / "stages" / name).exists())
    assert proc.returncode == (2 if expected else 0), proc.stderr
    assert sorted(line.split(": ", 2)[2] for line in proc.stderr.splitlines()) == expected


def test_fedora_format_2_sample_is_valid() -> None:
    run_osbuild("--inspect", str(SAMPLES / "fedora-30-v2.json"))
