"""The stages in format 2: files inputs, locations (tree://, input://) and osbuild's option shapes.

These run once the engine reads format 2; until then they are skipped, saying why.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import lzma
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import run_osbuild

CONTENT = "".join(f"line {i} of a file from the sources\n" for i in range(500)).encode()
CHECKSUM = "sha256:" + hashlib.sha256(CONTENT).hexdigest()
SOURCES = {"org.osbuild.inline": {"items": {CHECKSUM: {"encoding": "base64", "data": base64.b64encode(CONTENT).decode()}}}}
FROM_SOURCES = {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {CHECKSUM: {}}}


def os_pipeline() -> dict[str, Any]:
    """A small tree: a file, a directory with files, and a link to where a copy will go."""
    return {"name": "os", "stages": [
        {"type": "org.osbuild.copy", "options": {"files": [
            {"path": "/etc/issue", "text": "Welcome\n"},
            {"path": "/srv/site/index.html", "text": "<p>hi</p>\n"},
            {"path": "/srv/site/style.css", "text": "p {}\n", "mode": 0o600},
        ]}},
        {"type": "org.osbuild.ln", "options": {"paths": [
            {"target": "/etc/issue", "link_name": "tree:///etc/issue.net", "symbolic": True}]}},
    ]}


def build(pipelines: list[dict[str, Any]], export: str, store: Path, out: Path) -> Path:
    """Build a format-2 manifest and export one pipeline; skipped while the engine reads only format 1."""
    manifest = {"version": "2", "sources": SOURCES, "pipelines": pipelines}
    proc = run_osbuild("--store", str(store), "--output-directory", str(out), "--export", export, manifest=manifest,
                       check=False)
    if "is not supported yet" in proc.stderr:
        pytest.skip("the engine does not read format 2 yet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / export


def test_compressors_take_a_file_from_the_sources_or_from_a_pipeline(shared_store, tmp_path):
    from_os = {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
               "references": {"name:os": {"file": "/srv/site/index.html"}}}
    images = {"name": "images", "stages": [
        {"type": "org.osbuild.gzip", "inputs": {"file": FROM_SOURCES}, "options": {"filename": "file.gz", "level": 9}},
        {"type": "org.osbuild.xz", "inputs": {"file": FROM_SOURCES}, "options": {"filename": "/xz/file.xz"}},
        {"type": "org.osbuild.zstd", "inputs": {"file": from_os}, "options": {"filename": "index.zst"}},
    ]}
    tree = build([os_pipeline(), images], "images", shared_store, tmp_path)
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == ["file.gz", "index.zst", "xz", "xz/file.xz"]
    assert gzip.decompress((tree / "file.gz").read_bytes()) == CONTENT
    assert lzma.decompress((tree / "xz/file.xz").read_bytes()) == CONTENT
    unzstd = subprocess.run(["zstd", "-d", "--stdout", str(tree / "index.zst")], capture_output=True, check=True)
    assert unzstd.stdout == b"<p>hi</p>\n"


def test_copy_paths_from_an_input_and_within_the_tree(shared_store, tmp_path):
    stage = {"type": "org.osbuild.copy", "inputs": {"inlinefile": FROM_SOURCES}, "options": {"paths": [
        {"from": f"input://inlinefile/{CHECKSUM}", "to": "tree:///etc/motd"},
        # A trailing slash: what is in the directory.
        {"from": "tree:///srv/site/", "to": "tree:///var/www"},
        {"from": "tree:///srv/site", "to": "tree:///opt"},
        # Through the link to /etc/issue, inside the tree; then replacing the link itself.
        {"from": f"input://inlinefile/{CHECKSUM}", "to": "tree:///etc/issue.net"},
    ]}}
    replace = {"type": "org.osbuild.copy", "inputs": {"inlinefile": FROM_SOURCES}, "options": {"paths": [
        {"from": "tree:///srv/site/index.html", "to": "tree:///etc/issue.net", "remove_destination": True}]}}
    mkdirs = {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "tree:///var/www", "parents": True}, {"path": "opt"}]}}
    pipeline = os_pipeline()
    pipeline["stages"] += [mkdirs, stage]
    tree = build([pipeline], "os", shared_store, tmp_path / "first")
    assert (tree / "etc/motd").read_bytes() == CONTENT
    assert sorted(os.listdir(tree / "var/www")) == ["index.html", "style.css"]
    assert os.stat(tree / "var/www/style.css").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tree / "opt/site")) == ["index.html", "style.css"]
    assert os.readlink(tree / "etc/issue.net") == "/etc/issue"
    assert (tree / "etc/issue").read_bytes() == CONTENT
    pipeline["stages"].append(replace)
    tree = build([pipeline], "os", shared_store, tmp_path / "second")
    assert not (tree / "etc/issue.net").is_symlink()
    assert (tree / "etc/issue.net").read_text() == "<p>hi</p>\n"


def test_osbuilds_own_option_shapes_build(shared_store, tmp_path):
    """Options as osbuild's test manifests write them, for stages whose names and options are osbuild's."""
    stages = [
        {"type": "org.osbuild.chmod", "options": {"items": {"/etc/issue": {"mode": "a+x"}}}},
        {"type": "org.osbuild.kernel-cmdline", "options": {"root_fs_uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac",
                                                           "kernel_opts": "net.ifnames=0 crashkernel=auto"}},
        {"type": "org.osbuild.sysctld", "options": {"filename": "example.conf", "config": [
            {"key": "-key.that.will.not.fail", "value": "the-greatest-value-ever"}, {"key": "-key.pattern.excluded.with.glob"}]}},
        {"type": "org.osbuild.systemd.preset", "options": {"presets": [{"name": "ssh.service", "state": "enable"}]}},
        {"type": "org.osbuild.truncate", "options": {"filename": "disk.img", "size": "1M"}},
        {"type": "org.osbuild.machine-id", "options": {"first-boot": "yes"}},
    ]
    pipeline = os_pipeline()
    pipeline["stages"] += stages
    tree = build([pipeline], "os", shared_store, tmp_path)
    assert os.stat(tree / "etc/issue").st_mode & 0o111 == 0o111
    assert (tree / "etc/kernel/cmdline").read_text() == (
        "root=UUID=76a22bf4-f153-4541-b6c7-0332c0dfaeac net.ifnames=0 crashkernel=auto\n")
    assert (tree / "usr/lib/sysctl.d/example.conf").read_text() == (
        "-key.that.will.not.fail = the-greatest-value-ever\n-key.pattern.excluded.with.glob\n")
    assert (tree / "usr/lib/systemd/system-preset/50-osbuild.preset").read_text() == "enable ssh.service\n"
    assert os.stat(tree / "disk.img").st_size == 1 << 20
    assert (tree / "etc/machine-id").read_text() == "uninitialized\n"


def test_a_format_2_stage_with_a_bad_option_is_refused_with_its_path(shared_store, tmp_path):
    pipeline = {"name": "os", "stages": [{"type": "org.osbuild.gzip", "inputs": {"file": FROM_SOURCES},
                                          "options": {"filename": "a.gz", "level": 0}}]}
    manifest = {"version": "2", "sources": SOURCES, "pipelines": [pipeline]}
    proc = run_osbuild("--store", str(shared_store), "--output-directory", str(tmp_path), "--export", "os",
                       manifest=manifest, check=False)
    if "is not supported yet" in proc.stderr:
        pytest.skip("the engine does not read format 2 yet")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ".pipelines[0].stages[0].options.level" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_osbuild("--store", str(shared_store), "--json", manifest=manifest, check=False)
    errors = json.loads(proc.stdout)["errors"]
    assert [error["path"] for error in errors] == [["pipelines", 0, "stages", 0, "options", "level"]]


def test_the_originals_stages_build_in_format_2(shared_store, tmp_path):
    """fix-bls, debug-shell, chrony, fstab (strings, as the original wrote them) and selinux, in format 2."""
    entry = "/boot/loader/entries/fedora.conf"
    pipeline = {"name": "os", "stages": [
        {"type": "org.osbuild.copy", "options": {"files": [
            {"path": entry, "text": "linux /run/osbuild/tree/boot/vmlinuz\n"},
            {"path": "/etc/chrony.conf", "text": "pool 2.fedora.pool.ntp.org iburst\n"},
            {"path": "/etc/file_contexts", "text": "/.*\tsystem_u:object_r:etc_t:s0\n"},
        ]}},
        {"type": "org.osbuild.fix-bls", "options": {}},
        {"type": "org.osbuild.debug-shell", "options": {"tty": "/dev/ttyS0"}},
        {"type": "org.osbuild.chrony", "options": {"servers": [{"hostname": "ntp.example", "prefer": True}]}},
        {"type": "org.osbuild.fstab", "options": {"filesystems": [
            {"uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac", "vfs_type": "ext4", "path": "/", "freq": "1", "passno": "1"}]}},
        {"type": "org.osbuild.selinux", "options": {"file_contexts": "etc/file_contexts"}},
    ]}
    tree = build([pipeline], "os", shared_store, tmp_path)
    assert (tree / entry.lstrip("/")).read_text() == "linux /boot/vmlinuz\n"
    assert "TTYPath=/dev/ttyS0\n" in (tree / "etc/systemd/system/osbuild-debug-shell.service").read_text()
    assert (tree / "etc/chrony.conf").read_text() == "server ntp.example iburst prefer\n"
    assert (tree / "etc/fstab").read_text().endswith("\t1\t1\n")
    assert os.getxattr(tree / "etc/fstab", "security.selinux") == b"system_u:object_r:etc_t:s0\0"
