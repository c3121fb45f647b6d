"""org.osbuild.dnf against the test repositories: what it installs, where the rpm database
goes, what it leaves in the tree, and the one line it fails with when a repository lies."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, manifest_of, run_osbuild, stage_changes
from repo import KEY_FILE, Repos, closed_port_url, rpm_repos  # noqa: F401 (a fixture)

DBPATH = "/usr/lib/sysimage/rpm"
HOST_RPM_STATE = (Path.home() / ".rpmdb", Path("/var/lib/rpm"), Path("/var/cache/dnf"), Path("/var/lib/dnf"))


def dnf(repos: list[dict[str, Any]], packages: list[str], **options: Any) -> dict[str, Any]:
    return {"name": "org.osbuild.dnf",
            "options": {"repos": repos, "packages": packages, "releasever": "30", "basearch": "x86_64", **options}}


def rpm_qa(tree: Path) -> list[str]:
    """The packages of a tree's rpm database, as the tree's own rpm would list them."""
    out = subprocess.run(["rpm", "--root", str(tree), "--dbpath", DBPATH, "-qa", "--qf", "%{NEVRA}\\n"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, HOME="/nonexistent")).stdout
    return sorted(line for line in out.splitlines() if not line.startswith("gpg-pubkey"))


def host_state() -> dict[str, Any]:
    """What the host's rpm and dnf keep: every file under their state directories, with size and mtime."""
    state = {}
    for top in HOST_RPM_STATE:
        for dirpath, _, files in os.walk(top):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                state[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return state


APP_SET = ["osbuild-test-app-0.9-1.noarch", "osbuild-test-base-1.0-1.noarch", "osbuild-test-extra-1.0-1.noarch",
           "osbuild-test-lib-1:2.1-3.noarch", "osbuild-test-weak-1.0-1.noarch"]


def test_dnf_installs_a_group_with_scriptlets_and_its_database(rpm_repos: Repos, shared_store: Path) -> None:
    changes = stage_changes([], [dnf([rpm_repos.repo()], ["@osbuild-test"])], shared_store)
    added = changes["added"]
    database = sorted(path for path in added if path.startswith(DBPATH + "/"))
    assert "/usr/lib/sysimage/rpm/rpmdb.sqlite" in database
    assert_changes({"added": {p: f for p, f in added.items() if not p.startswith(DBPATH + "/")
                              and not p.startswith("/var/lib/dnf/")}}, {"added": {
        "/etc": {"type": "dir"},
        # The original left an empty machine-id where it had put a fake one for the scriptlets.
        "/etc/machine-id": {"text": "", "mode": "0444"},
        "/etc/osbuild-test-base.conf": {"text": "written by the %post of osbuild-test-base\n"},
        "/etc/dnf": {"type": "dir"}, "/etc/dnf/modules.d": {"type": "dir"},
        "/proc": {"type": "dir"}, "/dev": {"type": "dir"},
        "/usr": {"type": "dir"}, "/usr/bin": {"type": "dir"},
        "/usr/bin/osbuild-test-app": {"text": "#!/bin/sh\necho app\n", "mode": "0644"},
        "/usr/share": {"type": "dir"}, "/usr/share/osbuild-test": {"type": "dir"},
        "/usr/share/osbuild-test/base.txt": {"text": "base\n"},
        "/usr/share/osbuild-test/lib.txt": {"text": "lib\n"},
        "/usr/share/osbuild-test/weak.txt": {"text": "weak\n"},
        "/usr/share/osbuild-test/extra.txt": {"text": "extra\n"},
        "/usr/lib": {"type": "dir"}, "/usr/lib/sysimage": {"type": "dir"}, DBPATH: {"type": "dir"},
        "/var": {"type": "dir"}, "/var/lib": {"type": "dir"}, "/var/lib/dnf": {"type": "dir"},
        "/var/lib/osbuild-test": {"type": "dir"},
        "/var/lib/osbuild-test/state": {"text": "lib post ran\n"},
        # dnf's cache and logs are gone; their directories stay, as after the original's stage.
        "/var/log": {"type": "dir"}, "/var/cache": {"type": "dir"}, "/var/cache/dnf": {"type": "dir"},
    }})


def test_dnf_records_the_packages_and_their_signatures(rpm_repos: Repos, shared_store: Path) -> None:
    manifest = manifest_of([dnf([rpm_repos.repo()], ["osbuild-test-app"], install_weak_deps=False)])
    result = json.loads(run_osbuild("--store", str(shared_store), "--json", manifest=manifest).stdout)
    packages = result["metadata"]["tree"]["org.osbuild.dnf"]["packages"]
    key_id = rpm_repos.keys.fingerprint[-16:].lower()
    assert [(p["name"], p["epoch"], p["version"], p["release"], p["arch"]) for p in packages] == [
        ("osbuild-test-app", None, "0.9", "1", "noarch"),
        ("osbuild-test-base", None, "1.0", "1", "noarch"),
        ("osbuild-test-lib", 1, "2.1", "3", "noarch"),
    ], "without weak dependencies, osbuild-test-weak (a Recommends) stays out"
    assert all(p["signature"].startswith("RSA/SHA512, ") and p["signature"].endswith(f"Key ID {key_id}")
               for p in packages), packages


def test_original_shape_manifest_builds_a_tar_with_the_rpm_database(rpm_repos: Repos, shared_store: Path,
                                                                    tmp_path: Path) -> None:
    before = host_state()
    manifest = manifest_of(
        [dnf([rpm_repos.repo()], ["@osbuild-test", "osbuild-test-base"]),
         {"name": "org.osbuild.fstab", "options": {"filesystems": [
             {"uuid": "76a22bf4-f153-4541-b6c7-0332c0dfaeac", "vfs_type": "ext4", "path": "/", "freq": 1, "passno": 1}]}}],
        assembler={"name": "org.osbuild.tar", "options": {"filename": "tree.tar"}})
    run_osbuild("--store", str(shared_store), "--output-directory", str(tmp_path), "--export", "tree",
                "--export", "assembler", manifest=manifest)
    assert rpm_qa(tmp_path / "tree") == APP_SET
    with tarfile.open(tmp_path / "assembler/tree.tar") as tar:
        names = set(tar.getnames())
        fstab = tar.extractfile("./etc/fstab")
        assert fstab is not None and b"UUID=76a22bf4-f153-4541-b6c7-0332c0dfaeac" in fstab.read()
    assert {"./etc/osbuild-test-base.conf", "./var/lib/osbuild-test/state", "./usr/lib/sysimage/rpm/rpmdb.sqlite",
            "./usr/bin/osbuild-test-app"} <= names
    assert not any(name.startswith("./var/cache/dnf/") for name in names), "dnf's cache is not in the image"
    assert host_state() == before, "the host's rpm database and dnf state did not change"


@pytest.mark.parametrize("how", ["fingerprint", "url", "list"])
def test_gpgkey_as_fingerprint_url_or_list(how: str, rpm_repos: Repos, shared_store: Path) -> None:
    # The keys package puts the key in the tree's /etc/pki/rpm-gpg, where a fingerprint finds it.
    keys = dnf([rpm_repos.repo()], ["osbuild-test-keys"])
    key = {"fingerprint": rpm_repos.keys.fingerprint, "url": rpm_repos.key_url(),
           "list": [rpm_repos.keys.other_armored, rpm_repos.keys.armored]}[how]
    changes = stage_changes([keys], [dnf([rpm_repos.repo(key=key)], ["osbuild-test-base"])], shared_store)
    assert changes["added"]["/etc/osbuild-test-base.conf"]["text"] == "written by the %post of osbuild-test-base\n"
    assert KEY_FILE not in changes["added"]


def failure_line(stage: dict[str, Any], store: Path) -> str:
    """The one error line of a dnf stage that fails."""
    report = build_failure([stage], store)
    lines = [line.strip() for line in report.splitlines()
             if line.strip().startswith("error: ") and not line.startswith("error: stage ")]
    assert len(lines) == 1, report
    return lines[0]


def test_an_unsigned_package_is_refused(rpm_repos: Repos, shared_store: Path) -> None:
    line = failure_line(dnf([rpm_repos.repo("unsigned")], ["osbuild-test-unsigned"]), shared_store)
    assert line == "error: dnf install: GPG check FAILED: Package osbuild-test-unsigned-1.0-1.noarch.rpm is not signed"


def test_a_package_signed_by_another_key_is_refused(rpm_repos: Repos, shared_store: Path) -> None:
    line = failure_line(dnf([rpm_repos.repo("wrongkey")], ["osbuild-test-wrongkey"]), shared_store)
    assert line.startswith("error: dnf install: GPG check FAILED: Public key for osbuild-test-wrongkey-1.0-1.noarch.rpm "
                           "is not installed"), line


def test_a_changed_repository_fails_the_build(rpm_repos: Repos, shared_store: Path) -> None:
    repo = rpm_repos.repo("changed", checksum=rpm_repos.stale_checksum)
    line = failure_line(dnf([repo], ["osbuild-test-base"]), shared_store)
    assert line == (f"error: repos[0]: the repository changed: its repomd.xml has {rpm_repos.checksums['changed']}, "
                    f"the manifest's checksum is {rpm_repos.stale_checksum}")


def test_an_unreachable_repository_fails_the_build(rpm_repos: Repos, shared_store: Path) -> None:
    repo = {"baseurl": closed_port_url(), "gpgkey": rpm_repos.keys.armored}
    line = failure_line(dnf([repo], ["osbuild-test-base"]), shared_store)
    assert line.startswith("error: dnf: reading the repositories: Failed to download metadata for repo 'repo0'"), line
    assert "Couldn't connect to server" in line, line


def test_a_fingerprint_without_a_key_fails(rpm_repos: Repos, shared_store: Path) -> None:
    line = failure_line(dnf([rpm_repos.repo(key=rpm_repos.keys.other_fingerprint)], ["osbuild-test-base"]), shared_store)
    assert line == (f"error: gpgkey {rpm_repos.keys.other_fingerprint}: no key with this fingerprint in /etc/pki/rpm-gpg "
                    "or /usr/share/distribution-gpg-keys of the tree or the build root")


@pytest.mark.parametrize(("options", "path"), [
    ({"repos": [{"baseurl": "http://x/", "gpgkeys": "k"}]}, ".stages[0].options.repos[0]"),
    ({"repos": [{"gpgkey": "k"}]}, ".stages[0].options.repos[0]"),
    ({"repos": [{"baseurl": "http://x/", "checksum": "sha256:abc"}]}, ".stages[0].options.repos[0].checksum"),
    ({"packages": []}, ".stages[0].options.packages"),
    ({"cachedir": "/x"}, ".stages[0].options"),
])
def test_bad_options_are_rejected(options: dict[str, Any], path: str, shared_store: Path) -> None:
    stage = dnf([{"baseurl": "http://127.0.0.1:1/"}], ["a"])["options"]
    assert_rejected("org.osbuild.dnf", {**stage, **options}, path, shared_store)
