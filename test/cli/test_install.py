"""`pip install .` gives an `osbuild` command that finds its own stages, and --libdir still overrides them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

MANIFEST = {"stages": [{"name": "org.osbuild.hostname", "options": {"hostname": "installed"}}]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", str(REPO)], check=True, capture_output=True)
    return venv / "bin/osbuild"


def test_installed_command_builds_with_its_own_stages(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([str(installed), "--store", str(tmp_path / "store"), "--output-directory", str(out),
                           "--export", "tree", "-"], input=json.dumps(MANIFEST), capture_output=True, text=True,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "tree/etc/hostname").read_text() == "installed\n"
    modules = subprocess.run([str(installed), "--list-modules"], capture_output=True, text=True, check=True).stdout
    assert "org.osbuild.debian.bootstrap" in modules and "org.osbuild.qemu" in modules
    # Format 2's sources, inputs, devices and mounts are installed with the rest.
    for name in ("org.osbuild.curl", "org.osbuild.inline", "org.osbuild.tree", "org.osbuild.loopback", "org.osbuild.ext4"):
        assert name in modules, name


def test_installed_command_takes_another_libdir(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "lib/stages").mkdir(parents=True)
    proc = subprocess.run([str(installed), "--libdir", str(tmp_path / "lib"), "--store", str(tmp_path / "store"), "-"],
                          input=json.dumps(MANIFEST), capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "unknown stage 'org.osbuild.hostname'" in proc.stderr
