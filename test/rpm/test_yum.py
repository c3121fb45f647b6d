"""org.osbuild.yum: on a build root without yum (this host's Debian has dnf only) it installs with dnf and says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import manifest_of, run_osbuild
from repo import Repos, rpm_repos  # noqa: F401 (a fixture)


@pytest.mark.skipif(shutil.which("yum") is not None, reason="the host has a yum of its own")
def test_yum_uses_dnf_where_there_is_no_yum(rpm_repos: Repos, shared_store: Path) -> None:
    stage = {"name": "org.osbuild.yum", "options": {"repos": [rpm_repos.repo()], "packages": ["osbuild-test-extra"],
                                                    "releasever": "30", "basearch": "x86_64", "verbosity": "warn"}}
    result = json.loads(run_osbuild("--store", str(shared_store), "--json", manifest=manifest_of([stage])).stdout)
    packages = result["metadata"]["tree"]["org.osbuild.yum"]["packages"]
    assert [p["name"] for p in packages] == ["osbuild-test-base", "osbuild-test-extra"]
    output = result["log"]["tree"][0]["output"]
    assert "org.osbuild.yum: the build root has no yum, using its dnf" in output
    assert "+ dnf -y --installroot" in output
