"""Builds by an ordinary user, for tests: a user with subordinate ids, a copy of the project it can read.

The tests run as root; these fixtures make what an ordinary user's build needs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

USER = "osbuild-rootless"
SUBORDINATE = "420000-485535"
# Debian's Python, which an ordinary user gets.
USER_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def rootless_user() -> str:
    """A user with subordinate uid and gid ranges, for builds without root."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    for path in ("/etc/subuid", "/etc/subgid"):
        if not os.path.exists(path):  # a machine where no user has subordinate ids yet
            Path(path).touch(mode=0o644)
    with open("/etc/subuid", encoding="utf-8") as f:
        known = f.read()
    if not any(line.split(":")[0] == USER for line in known.splitlines()):
        subprocess.run(["usermod", "--add-subuids", SUBORDINATE, "--add-subgids", SUBORDINATE, USER], check=True)
    return USER


@pytest.fixture(scope="session")
def user_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The engine and its modules where the rootless user can read them (a checkout may sit under /root)."""
    base = Path(tempfile.mkdtemp(prefix="osbuild-rootless-", dir="/var/tmp"))
    base.chmod(0o755)
    copy = base / "osbuild-checkout"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "output", ".osbuild", "__pycache__", ".*_cache"))
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    yield copy
    shutil.rmtree(base)


@pytest.fixture
def user_dir(rootless_user: str) -> Iterator[Path]:
    """An empty directory the rootless user owns, for its store and output."""
    path = Path(tempfile.mkdtemp(prefix="osbuild-rootless-work-", dir="/var/tmp"))
    path.chmod(0o755)
    entry = pwd.getpwnam(rootless_user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    # The store holds files of the user's subordinate ids: root removes them.
    shutil.rmtree(path)


def readable_copy(directory: Path, base: Path) -> Path:
    """A copy of directory under base that every user can read."""
    copy = base / directory.name
    shutil.copytree(directory, copy)
    subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
    return copy


def run_as_user(user: str, checkout: Path, *args: str, manifest: Any, libdir: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    """Run the engine of checkout as user, with Debian's Python, the manifest on stdin."""
    entry = pwd.getpwnam(user)
    argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
            USER_PYTHON, "-m", "osbuild", "--libdir", str(libdir or checkout), *args, "-"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "PYTHONPATH": str(checkout),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    return subprocess.run(argv, input=json.dumps(manifest), capture_output=True, text=True, cwd="/", env=env,
                          check=False, timeout=3600)


