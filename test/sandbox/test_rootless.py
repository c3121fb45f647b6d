"""Builds by an ordinary user: the same bytes as a root build, a store the user owns, the host out of reach.

The tests run as root and build as a dedicated user with subordinate ids (rootless.py
makes it if the machine lacks it), from a copy of the project that user can read.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import SOURCE_EPOCH, run_osbuild
from rootless import rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)

SMALL = {
    "source-epoch": SOURCE_EPOCH,
    "stages": [
        {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}, {"path": "/srv/data", "parents": True}]}},
        {"name": "org.osbuild.hostname", "options": {"hostname": "rootless"}},
        {"name": "org.osbuild.chown", "options": {"items": {"/srv/data": {"user": 123, "group": 456}}}},
    ],
    "assembler": {"name": "org.osbuild.tar", "options": {"filename": "tree.tar"}},
}


def test_a_rootless_build_gives_the_root_builds_bytes(rootless_user: str, user_checkout: Path, user_dir: Path,
                                                       tmp_path: Path) -> None:
    proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"),
                       "--output-directory", str(user_dir / "out"), "--export", "assembler", manifest=SMALL)
    assert proc.returncode == 0, proc.stderr
    run_osbuild("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "assembler",
                manifest=SMALL)
    ours = (user_dir / "out" / "assembler" / "tree.tar").read_bytes()
    assert ours == (tmp_path / "out" / "assembler" / "tree.tar").read_bytes()
    listing = subprocess.run(["tar", "tvf", "-", "--numeric-owner"], input=ours, capture_output=True, check=True).stdout
    assert b" 123/456 " in listing and b" 0/0 " in listing, "the tar holds the owners the tree has inside"
    uid = pwd.getpwnam(rootless_user).pw_uid
    assert os.stat(user_dir / "store").st_uid == uid, "the store belongs to the user"
    assert os.stat(user_dir / "out" / "assembler" / "tree.tar").st_uid == uid, "the image belongs to the user"
    # On disk, the tree's files are the user's subordinate ids: 0 inside is the first of them.
    # (Two layers hold /srv/data: mkdir's, owned by 0 inside, and chown's.)
    owners = sorted(os.stat(p).st_uid for p in (user_dir / "store" / "objects").glob("*/tree/srv/data"))
    assert owners == [420000, 420000 + 123]
    # The change records give the owners the tree has inside.
    changes = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"), "--changes", "tree/3",
                          manifest=SMALL)
    assert changes.returncode == 0, changes.stderr
    assert json.loads(changes.stdout)["changed"]["/srv/data"] == {"uid": [0, 123], "gid": [0, 456]}


NODE_STAGE = """#!/usr/bin/python3
import osbuild.api


def main(tree, options):
    osbuild.api.device_node("/null", 1, 3)


if __name__ == "__main__":
    osbuild.api.main(main)
"""


def test_rootless_refuses_device_nodes_in_one_line(rootless_user: str, user_checkout: Path, user_dir: Path) -> None:
    stage = user_checkout / "stages" / "org.osbuild.test.node"
    stage.write_text(NODE_STAGE)
    stage.chmod(0o755)
    (user_checkout / "stages" / "org.osbuild.test.node.meta.json").write_text(json.dumps(
        {"summary": "test: asks for /dev/null", "description": ["A test stage."], "schema": {"type": "object"}}))
    proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"),
                       manifest={"stages": [{"name": "org.osbuild.test.node"}]})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "device nodes, which only a build as root can make" in proc.stderr.strip().splitlines()[0]


def test_without_subordinate_ids_the_error_names_the_fix(user_checkout: Path) -> None:
    proc = run_as_user("nobody", user_checkout, "--store", "/nonexistent/store", manifest=SMALL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "subordinate ids" in lines[0] and "usermod --add-subuids" in lines[0]


@pytest.mark.image
def test_the_default_image_without_root_is_the_root_image(rootless_user: str, user_checkout: Path, user_dir: Path,
                                                           locked_sample: dict[str, Any], shared_store: Path,
                                                           tmp_path: Path) -> None:
    proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"),
                       "--output-directory", str(user_dir / "out"), "--export", "assembler", manifest=locked_sample)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_osbuild("--store", str(shared_store), "--output-directory", str(tmp_path / "out"), "--export", "assembler",
                manifest=locked_sample)
    name = "debian-bookworm.qcow2"
    ours = subprocess.run(["sha256sum", str(user_dir / "out" / "assembler" / name)], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    theirs = subprocess.run(["sha256sum", str(tmp_path / "out" / "assembler" / name)], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    assert ours == theirs, f"rootless {ours} != root {theirs}"


def test_rootless_refuses_selinux_labels_in_one_line(rootless_user: str, user_checkout: Path, user_dir: Path) -> None:
    contexts = "/.*\tsystem_u:object_r:default_t:s0\n"
    manifest = {"stages": [
        {"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/file_contexts", "text": contexts}]}},
        {"name": "org.osbuild.selinux", "options": {"file_contexts": "/etc/file_contexts"}},
    ]}
    proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"), manifest=manifest)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert ("labels files for SELinux, which only a build as root can write" in
            proc.stderr.strip().splitlines()[0]), proc.stderr
