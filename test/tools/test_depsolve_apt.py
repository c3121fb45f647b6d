"""tools/osbuild-depsolve-apt: Debian package requests locked to exact .deb files (needs deb.debian.org)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

TOOL = REPO / "tools/osbuild-depsolve-apt"
MIRROR = "http://deb.debian.org/debian"
SOURCES = [f"deb {MIRROR} bookworm main"]


def bootstrap(variant: str = "minbase", include: list[str] | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {"suite": "bookworm", "variant": variant, "apt_sources": SOURCES}
    if include is not None:
        options["include"] = include
    return {"name": "org.osbuild.debian.bootstrap", "options": options}


def apt(*include: str) -> dict[str, Any]:
    return {"name": "org.osbuild.apt", "options": {"include": list(include)}}


def depsolve(manifest: Any, tmp: Path, raw: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the tool on a manifest (or on `raw` text) written to a file; the locked manifest goes to out.json."""
    path = tmp / "manifest.json"
    path.write_text(raw if raw is not None else json.dumps(manifest))
    return subprocess.run([sys.executable, str(TOOL), str(path), "-o", str(tmp / "out.json")],
                          capture_output=True, text=True, check=False)


def locked(manifest: Any, tmp: Path) -> dict[str, Any]:
    proc = depsolve(manifest, tmp)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads((tmp / "out.json").read_text())
    return result


def names(stage: dict[str, Any]) -> set[str]:
    return {deb["name"] for deb in stage["options"]["debs"]}


def test_request_locks_to_checksums_and_urls(tmp_path):
    result = locked({"pipeline": {"stages": [bootstrap(include=["systemd"])]}}, tmp_path)
    stage = result["pipeline"]["stages"][0]
    # The request is kept next to its lock, so the lock can be refreshed.
    assert stage["options"]["include"] == ["systemd"]
    assert stage["options"]["variant"] == "minbase"
    debs = stage["options"]["debs"]
    urls = result["sources"]["org.osbuild.files"]["urls"]
    assert {"systemd", "apt", "dpkg", "base-files", "libc6"} <= names(stage)
    assert len({deb["name"] for deb in debs}) == len(debs)
    for deb in debs:
        assert sorted(deb) == ["arch", "checksum", "name", "version"]
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", deb["checksum"])
        assert deb["arch"] in ("amd64", "all")
        source = urls[deb["checksum"]]
        assert source["url"].startswith(f"{MIRROR}/pool/main/")
        assert source["url"].endswith(".deb")
        assert isinstance(source["size"], int) and source["size"] > 0
    # Exactly the packages' files are in the sources.
    assert sorted(urls) == sorted(deb["checksum"] for deb in debs)

    # The lock describes the mirror's real file: check one small package byte for byte.
    deb = next(deb for deb in debs if deb["name"] == "base-files")
    with urllib.request.urlopen(urls[deb["checksum"]]["url"], timeout=120) as response:
        data = response.read()
    assert len(data) == urls[deb["checksum"]]["size"]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == deb["checksum"]
    assert f"/base-files_{deb['version']}_amd64.deb" in urls[deb["checksum"]]["url"]


def test_variants_grow_from_essential_to_important(tmp_path):
    sets = {}
    for variant in ("essential", "minbase", "important"):
        (tmp_path / variant).mkdir()
        sets[variant] = names(locked({"pipeline": {"stages": [bootstrap(variant)]}}, tmp_path / variant)["pipeline"]["stages"][0])
    assert sets["essential"] < sets["minbase"] < sets["important"]
    # The essential set has dpkg but no apt; minbase adds apt (and the required packages); important adds more.
    assert "dpkg" in sets["essential"] and "apt" not in sets["essential"]
    assert "apt" in sets["minbase"]
    assert "systemd" not in sets["minbase"]


def test_apt_stage_locks_only_what_the_bootstrap_lacks(tmp_path):
    result = locked({"pipeline": {"stages": [bootstrap(), apt("hello"), apt("jq")]}}, tmp_path)
    base, hello, jq = result["pipeline"]["stages"]
    # hello needs only libc6, in the base already; jq brings its two libraries.
    assert names(hello) == {"hello"}
    assert names(jq) == {"jq", "libjq1", "libonig5"}
    assert not names(base) & (names(hello) | names(jq))
    urls = result["sources"]["org.osbuild.files"]["urls"]
    assert all(deb["checksum"] in urls for stage in (base, hello, jq) for deb in stage["options"]["debs"])


def test_format_2_locks_into_packages_inputs_of_curl_sources(tmp_path):
    def v2(stage: dict[str, Any]) -> dict[str, Any]:
        return {"type": stage["name"], "options": stage["options"]}
    result = locked({"version": "2", "pipelines": [{"name": "os", "stages": [v2(bootstrap()), v2(apt("jq"))]}]}, tmp_path)
    base, jq = result["pipelines"][0]["stages"]
    items = result["sources"]["org.osbuild.curl"]["items"]
    for stage in (base, jq):
        assert "debs" not in stage["options"]
        packages = stage["inputs"]["packages"]
        assert (packages["type"], packages["origin"]) == ("org.osbuild.files", "org.osbuild.source")
        for ref in packages["references"]:
            meta = ref["options"]["metadata"]
            assert sorted(meta) == ["deb.arch", "deb.name", "deb.version"]
            assert items[ref["id"]].endswith(f"/{meta['deb.name']}_{meta['deb.version'].split(':')[-1]}_{meta['deb.arch']}.deb")
    assert {ref["options"]["metadata"]["deb.name"] for ref in jq["inputs"]["packages"]["references"]} == {
        "jq", "libjq1", "libonig5"}
    # The locked manifest is valid format 2 as it stands.
    proc = subprocess.run([sys.executable, "-m", "osbuild", "--libdir", str(REPO), "--inspect", str(tmp_path / "out.json")],
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_locking_again_refreshes_the_lock_and_keeps_other_sources(tmp_path):
    first = locked({"pipeline": {"stages": [bootstrap(variant="essential"), apt("hello")]}}, tmp_path)
    other = {"url": "https://example.com/file.txt"}
    first["sources"]["org.osbuild.files"]["urls"]["sha256:" + "a" * 64] = other
    # A package set that shrinks: hello's file leaves the sources, the unrelated file stays.
    first["pipeline"]["stages"][1]["options"]["include"] = []
    (tmp_path / "again").mkdir()
    again = locked(first, tmp_path / "again")
    assert again["pipeline"]["stages"][1]["options"]["debs"] == []
    assert again["pipeline"]["stages"][0] == first["pipeline"]["stages"][0]
    hello = first["pipeline"]["stages"][1]["options"]["debs"][0]["checksum"]
    urls = again["sources"]["org.osbuild.files"]["urls"]
    assert hello not in urls
    assert urls["sha256:" + "a" * 64] == other


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line the tool printed (progress lines aside), checked to be alone and without a traceback."""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize(("manifest", "status", "message"), [
    ({"pipeline": {"stages": [bootstrap("tiny")]}}, 2,
     "stage 0 (org.osbuild.debian.bootstrap): unknown variant 'tiny' (one of essential, apt, required, minbase, "),
    ({"pipeline": {"stages": [apt("hello")]}}, 2,
     "stage 0 (org.osbuild.apt): org.osbuild.apt needs an org.osbuild.debian.bootstrap before it"),
    ({"pipeline": {"stages": [{"name": "org.osbuild.debian.bootstrap", "options": {"suite": "bookworm"}}]}}, 2,
     "stage 0 (org.osbuild.debian.bootstrap): no apt_sources to resolve against"),
    ({"pipeline": {"stages": [dict(bootstrap(), options={**bootstrap()["options"], "include": "systemd"})]}}, 2,
     "stage 0 (org.osbuild.debian.bootstrap): include must be a list of strings"),
    ({"pipeline": {"stages": "org.osbuild.debian.bootstrap"}}, 2, "not a format-1 manifest"),
    ([bootstrap()], 2, "not a manifest (a JSON object)"),
    ({"version": "2", "pipelines": {"os": []}}, 2, "not a format-2 manifest"),
    ({"pipeline": {"stages": [bootstrap(include=["no-such-package-osbuild"])]}}, 1,
     "Unable to locate package no-such-package-osbuild"),
])
def test_bad_requests_fail_in_one_line(tmp_path, manifest, status, message):
    proc = depsolve(manifest, tmp_path)
    assert proc.returncode == status, proc.stderr
    line = error_line(proc)
    assert line.startswith(f"osbuild-depsolve-apt: error: {tmp_path / 'manifest.json'}: ")
    assert message in line
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(("raw", "message"), [
    ('{"pipeline": {"stages": [}}', "invalid JSON at line 1 column 26: Expecting value"),
    ("", "invalid JSON at line 1 column 1: Expecting value"),
])
def test_invalid_json_fails_in_one_line(tmp_path, raw, message):
    proc = depsolve(None, tmp_path, raw=raw)
    assert proc.returncode == 2
    assert error_line(proc) == f"osbuild-depsolve-apt: error: {tmp_path / 'manifest.json'}: {message}"


def test_missing_file_and_unwritable_output_fail_in_one_line(tmp_path):
    missing = tmp_path / "missing.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(missing)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert error_line(proc) == f"osbuild-depsolve-apt: error: {missing}: No such file or directory"

    (tmp_path / "manifest.json").write_text(json.dumps({"pipeline": {"stages": []}}))
    output = tmp_path / "no-such-dir" / "out.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "manifest.json"), "-o", str(output)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == f"osbuild-depsolve-apt: error: {output}: No such file or directory"
