"""The locked RPM path: osbuild-depsolve-dnf turns dnf stages into org.osbuild.rpm stages with
every .rpm in the sources, and the locked manifest builds the same package set with no repository."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO, build_failure, manifest_of, run_osbuild
from repo import Repos, rpm_repos, serve  # noqa: F401 (a fixture)
from test_dnf import APP_SET, dnf, host_state, rpm_qa
from testlib import v2_manifest, v2_pipeline


def depsolve(manifest: dict[str, Any], work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "request.json").write_text(json.dumps(manifest))
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-dnf"), str(work / "request.json"),
                    "-o", str(work / "locked.json")], check=True, capture_output=True, text=True)
    locked: dict[str, Any] = json.loads((work / "locked.json").read_text())
    return locked


def fetch_sources(sources: dict[str, Any], store: Path) -> None:
    """Fill the store's file cache with the sources, as a build does before its stages run."""
    run_osbuild("--store", str(store), manifest={"pipeline": {"stages": [{"name": "org.osbuild.noop"}]},
                                                  "sources": sources})


def test_a_locked_format_1_manifest_builds_offline(rpm_repos: Repos, tmp_path: Path) -> None:
    store = tmp_path / "store"
    before = host_state()
    # A server of its own, stopped before the build: the locked manifest must need no repository.
    with serve(rpm_repos.root) as server:
        repo = rpm_repos.repo()
        repo["baseurl"] = repo["baseurl"].replace(rpm_repos.url, server.url)
        request = manifest_of([dnf([repo], ["@osbuild-test"]), dnf([repo], ["osbuild-test-keys", "osbuild-test-base"])])
        locked = depsolve(request, tmp_path / "lock")
        fetch_sources(locked["sources"], store)
    assert host_state() == before, "locking changed the host's rpm or dnf state"
    stages = locked["pipeline"]["stages"]
    assert [s["name"] for s in stages] == ["org.osbuild.rpm", "org.osbuild.rpm"]
    assert len(stages[0]["options"]["packages"]) == 5 and len(stages[1]["options"]["packages"]) == 1, \
        "the second stage locks only what the first lacks"
    assert all(p["check_gpg"] for s in stages for p in s["options"]["packages"])
    assert stages[0]["options"]["gpgkeys"] == [rpm_repos.keys.armored]
    urls = locked["sources"]["org.osbuild.files"]["urls"]
    assert sorted(Path(u).name for u in urls.values()) == sorted(
        ["osbuild-test-app-0.9-1.noarch.rpm", "osbuild-test-base-1.0-1.noarch.rpm", "osbuild-test-extra-1.0-1.noarch.rpm",
         "osbuild-test-lib-2.1-3.noarch.rpm", "osbuild-test-weak-1.0-1.noarch.rpm", "osbuild-test-keys-1.0-1.noarch.rpm"])
    for checksum, url in urls.items():
        data = (rpm_repos.root / "main" / Path(url).name).read_bytes()
        assert checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    run_osbuild("--store", str(store), "--output-directory", str(tmp_path / "out"), "--export", "tree", manifest=locked)
    tree = tmp_path / "out/tree"
    assert rpm_qa(tree) == sorted([*APP_SET, "osbuild-test-keys-1.0-1.noarch"])
    assert (tree / "etc/osbuild-test-base.conf").read_text() == "written by the %post of osbuild-test-base\n"
    assert (tree / "var/lib/osbuild-test/state").read_text() == "lib post ran\n"
    assert (tree / "etc/machine-id").read_text() == ""


def test_a_locked_format_2_manifest_builds_offline(rpm_repos: Repos, tmp_path: Path) -> None:
    store = tmp_path / "store"
    stage = dnf([rpm_repos.repo()], ["osbuild-test-app"], install_weak_deps=False)
    request = v2_manifest(v2_pipeline("os", {"type": stage["name"], "options": stage["options"]}))
    locked = depsolve(request, tmp_path / "lock")
    rpm = locked["pipelines"][0]["stages"][0]
    assert rpm["type"] == "org.osbuild.rpm" and rpm["inputs"]["packages"]["type"] == "org.osbuild.files"
    assert len(locked["sources"]["org.osbuild.curl"]["items"]) == 3
    fetch_sources({"org.osbuild.files": {"urls": locked["sources"]["org.osbuild.curl"]["items"]}}, store)
    offline = json.loads(json.dumps(locked).replace(rpm_repos.url, "http://127.0.0.1:1"))
    run_osbuild("--store", str(store), "--output-directory", str(tmp_path / "out"), "--export", "os", manifest=offline)
    assert rpm_qa(tmp_path / "out/os") == ["osbuild-test-app-0.9-1.noarch", "osbuild-test-base-1.0-1.noarch",
                                           "osbuild-test-lib-1:2.1-3.noarch"]


def test_the_rpm_stage_refuses_an_unsigned_package(rpm_repos: Repos, shared_store: Path) -> None:
    path = rpm_repos.root / "unsigned/osbuild-test-unsigned-1.0-1.noarch.rpm"
    checksum = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    stage = {"name": "org.osbuild.rpm", "options": {"gpgkeys": [rpm_repos.keys.armored],
                                                    "packages": [{"checksum": checksum, "check_gpg": True}]}}
    report = build_failure([stage], shared_store, sources={"org.osbuild.files": {"urls": {
        checksum: f"{rpm_repos.baseurl('unsigned')}{path.name}"}}})
    assert f"error: package {checksum}: its signature does not verify against the given keys" in report, report


def test_depsolve_dnf_fails_in_one_line_on_a_bad_signature(rpm_repos: Repos, tmp_path: Path) -> None:
    (tmp_path / "request.json").write_text(json.dumps(manifest_of([dnf([rpm_repos.repo("wrongkey")],
                                                                       ["osbuild-test-wrongkey"])])))
    proc = subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-dnf"), str(tmp_path / "request.json")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"osbuild-depsolve-dnf: error: {tmp_path}/request.json: dnf install: GPG check FAILED: "
                                  "Public key for osbuild-test-wrongkey-1.0-1.noarch.rpm is not installed"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
