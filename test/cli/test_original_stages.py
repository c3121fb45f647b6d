"""`osbuild --list-modules` shows the original osbuild's seventeen stages among ours.

The original: github.com/osbuild/osbuild at tag 3 (commit cd49e2407c83, 2019-10-03), the last
commit with exactly these seventeen stages and no others (rpm and chrony came with the next ones).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from testlib import osbuild_argv, osbuild_env

LIBDIR = Path(__file__).parent.parent.parent
ORIGINAL_STAGES = [
    "org.osbuild.debug-shell", "org.osbuild.dnf", "org.osbuild.firewall", "org.osbuild.fix-bls",
    "org.osbuild.fstab", "org.osbuild.grub2", "org.osbuild.hostname", "org.osbuild.keymap",
    "org.osbuild.locale", "org.osbuild.noop", "org.osbuild.script", "org.osbuild.selinux",
    "org.osbuild.systemd", "org.osbuild.test", "org.osbuild.timezone", "org.osbuild.users", "org.osbuild.yum",
]
# Stages that come with the RPM install path, which another branch adds.
RPM_PATH = {"org.osbuild.dnf", "org.osbuild.yum"}


def listed_modules() -> dict[str, set[str]]:
    """--list-modules as {kind: names}: a heading line per kind, then one indented line per module."""
    proc = subprocess.run(osbuild_argv("--libdir", str(LIBDIR), "--list-modules"), capture_output=True, text=True,
                          check=True, env=osbuild_env())
    modules: dict[str, set[str]] = {}
    kind = ""
    for line in proc.stdout.splitlines():
        if not line.startswith(" "):
            kind = line.rstrip(":")
            modules[kind] = set()
        elif line.strip():
            modules[kind].add(line.split()[0])
    return modules


def test_seventeen_stages():
    assert len(ORIGINAL_STAGES) == len(set(ORIGINAL_STAGES)) == 17


@pytest.mark.parametrize("stage", ORIGINAL_STAGES)
def test_original_stage_is_listed(stage):
    stages = listed_modules()["stages"]
    if stage in RPM_PATH and stage not in stages:
        pytest.skip(f"{stage} comes with the RPM install path (branch rpm), not yet in this checkout")
    assert stage in stages


def test_listed_stages_have_both_schemas():
    # Listed means usable in both formats: every original stage that is here has schema and schema_2.
    for stage in set(ORIGINAL_STAGES) & listed_modules()["stages"]:
        meta = json.loads((LIBDIR / "stages" / f"{stage}.meta.json").read_text())
        assert "schema" in meta and "schema_2" in meta, stage
