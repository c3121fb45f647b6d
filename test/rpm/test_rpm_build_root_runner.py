"""The RPM build roots' runner (org.osbuild.fedora30) on a build root that org.osbuild.rpm installs
from RPMs carrying this host's real binaries: Debian's python3, glibc's loader, libc and ldconfig,
and systemd-sysusers and systemd-tmpfiles with their libraries, plus sysusers.d, tmpfiles.d and
ld.so.conf.d configuration. Fedora's mirrors cannot be reached, so the tools are Debian's builds in
Fedora's kind of packages; what is tested is what the runner and the sandbox make of them.

Nothing here provides update-ca-trust (Debian has no genuine one), so only that step's absence is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from repo import run
from testlib import Library, source_files_input, v2_manifest, v2_pipeline, v2_stage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
from rootless import readable_copy, rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)

PYTHON = "/usr/bin/python3.11"   # Debian's; root's `python3` on PATH is another build
SYSTEMD_TOOLS = ("/usr/bin/systemd-sysusers", "/usr/bin/systemd-tmpfiles")
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
LOADER = "ld-linux-x86-64.so.2"
# Parts of the standard library no runner or stage here imports (the static libpython alone is 25 MB).
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "lib2to3", "ensurepip", "distutils", "pydoc_data",
                   "site-packages", "dist-packages", "sitecustomize.py", "__pycache__")
TEST_LIBS = "/usr/lib/osbuild-test-libs"

SYSUSERS_CONF = 'g osbuildgrp -\nu osbuildtest - "osbuild test user" /var/lib/osbuildtest\n'
TMPFILES_CONF = ("d /run/osbuild-tmpfiles-dir 0750 osbuildtest osbuildtest -\n"
                 "f /var/tmp/osbuild-tmpfiles-file 0644 root root - made by tmpfiles\n"
                 # A user nobody makes: tmpfiles fails on this line, which the runner tolerates.
                 "d /run/osbuild-tmpfiles-nouser 0755 nosuchuser - -\n")
PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"

# Records what a module sees of the build root after the runner prepared it.
PROBE_STAGE = "org.osbuild.test.probe"
PROBE_BODY = '''
import pwd
import stat


def main(tree, options):
    seen = {}
    for path in ("/etc/passwd", "/etc/group", "/etc/ld.so.conf", "/var/tmp/osbuild-tmpfiles-file"):
        seen[path] = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    st = os.stat("/run/osbuild-tmpfiles-dir")
    seen["tmpfiles-dir"] = {"owner": pwd.getpwuid(st.st_uid).pw_name, "mode": oct(stat.S_IMODE(st.st_mode))}
    with open("/etc/ld.so.cache", "rb") as f:
        seen["ld.so.cache"] = [p for p in ("/usr/lib/osbuild-test-libs/libz.so.1",) if p.encode() in f.read()]
    seen["nsswitch.conf"] = os.path.lexists("/etc/nsswitch.conf")
    seen["ca-bundle"] = os.path.lexists("/etc/pki/tls/certs/ca-bundle.crt")
    seen["pki"] = sorted(os.path.join(d, n) for d, dirs, files in os.walk("/etc/pki") for n in dirs + files)
    seen["mtab"] = os.readlink("/etc/mtab")
    seen["earlier-marker"] = os.path.exists("/etc/osbuild-probe-marker")
    with open("/etc/osbuild-probe-marker", "w", encoding="utf-8") as f:
        f.write("written by a stage\\n")
    with open(os.path.join(tree, options["report"]), "w", encoding="utf-8") as f:
        json.dump(seen, f, indent=1, sort_keys=True)
'''


@dataclass(frozen=True)
class Binary:
    """A package of this host's files: its name, and what it holds (see fill())."""

    name: str
    files: dict[str, str]          # path in the package -> a host path, "->TARGET" or "=TEXT"


def shared_libraries(*programs: str) -> dict[str, str]:
    """The libraries the programs load, by ldd, at their path in a merged-/usr tree (the loader excepted)."""
    libraries = {}
    for program in programs:
        for line in run(["ldd", program]).splitlines():
            match = re.match(r"\s*(\S+) => (\S+) \(", line)
            if match:
                found = match.group(2)
                directory = os.path.dirname("/usr" + found if found.startswith("/lib/") else found)
                libraries[f"{directory}/{match.group(1)}"] = os.path.realpath(found)
    return libraries


def build_root_packages() -> list[Binary]:
    """Fedora's split of a minimal build root, with this host's binaries."""
    loader = os.path.realpath(f"/lib64/{LOADER}")
    python_libs = shared_libraries(PYTHON)
    systemd_libs = {path: host for path, host in shared_libraries(*SYSTEMD_TOOLS).items() if path not in python_libs}
    glibc = {path: host for path, host in python_libs.items() if os.path.basename(path).startswith(("libc.", "libm."))}
    filesystem = {"/bin": "->usr/bin", "/sbin": "->usr/sbin", "/lib": "->usr/lib", "/lib64": "->usr/lib64",
                  "/etc/group": "=" + GROUP,
                  # What the original's runner removed: nss modules that need a booted system.
                  "/etc/nsswitch.conf": "=passwd: files systemd\ngroup: files systemd\n",
                  # A secret the copy of /etc leaves out, as the binds do, beside what it keeps.
                  "/etc/pki/tls/private/test.key": "=secret\n", "/etc/pki/tls/certs/test.pem": "=cert\n"}
    return [
        Binary("osbuild-br-filesystem", {**filesystem, "/etc/passwd": "=" + PASSWD}),
        # A broken one, whose /etc/passwd is a directory: systemd-sysusers fails on it.
        Binary("osbuild-br-broken-filesystem", {**filesystem, "/etc/passwd/README": "=not a file\n"}),
        Binary("osbuild-br-glibc", {
            f"{MULTIARCH}/{LOADER}": loader, f"/usr/lib64/{LOADER}": f"->../lib/x86_64-linux-gnu/{LOADER}",
            "/usr/sbin/ldconfig": "/usr/sbin/ldconfig", **glibc,
        }),
        Binary("osbuild-br-python3", {
            "/usr/bin/python3": "->python3.11", "/usr/bin/python3.11": PYTHON, "/usr/lib/python3.11": "/usr/lib/python3.11",
            **{path: host for path, host in python_libs.items() if path not in glibc},
        }),
        Binary("osbuild-br-systemd", {tool: tool for tool in SYSTEMD_TOOLS} | systemd_libs),
        Binary("osbuild-br-config", {
            "/usr/lib/sysusers.d/osbuild-test.conf": "=" + SYSUSERS_CONF,
            "/usr/lib/tmpfiles.d/osbuild-test.conf": "=" + TMPFILES_CONF,
            "/etc/ld.so.conf.d/osbuild-test.conf": f"={TEST_LIBS}\n",
            f"{TEST_LIBS}/libz.so.1": os.path.realpath(f"{MULTIARCH}/libz.so.1"),
        }),
    ]


def fill(root: Path, files: dict[str, str]) -> None:
    """Lay out a package's files: "=TEXT" a file with that text, "->TARGET" a symlink, else a host path's copy."""
    for path, what in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if what.startswith("->"):
            target.symlink_to(what[2:])
        elif what.startswith("="):
            target.write_text(what[1:])
        elif os.path.isdir(what):
            shutil.copytree(what, target, symlinks=True, ignore=lambda _d, names: [n for n in names if n in STDLIB_LEFT_OUT])
        else:
            shutil.copy2(what, target)


def spec(package: Binary, root: Path) -> str:
    tops = sorted({"/" + path.lstrip("/").split("/")[0] for path in package.files})
    return "\n".join([
        f"Name: {package.name}", "Version: 1.0", "Release: 1", "Summary: a build-root package of the osbuild tests",
        "License: MIT", "AutoReqProv: no",
        # The host's binaries as they are: no stripping, no debuginfo, no build-id links, no compression.
        "%global debug_package %{nil}", "%global __os_install_post %{nil}", "%global _build_id_links none",
        "%global _binary_payload w.ufdio",
        "", "%description", f"{package.name}, built by the osbuild tests from this host's files.",
        "", "%install", f"cp -a {root}/. %{{buildroot}}/",
        "", "%files", *tops, "",
    ])


def build_packages(work: Path) -> dict[str, Path]:
    """rpmbuild every build-root package; name -> .rpm file."""
    env = dict(os.environ, HOME=str(work / "home"), SOURCE_DATE_EPOCH="1700000000")
    (work / "home").mkdir(parents=True)
    rpms = {}
    for package in build_root_packages():
        top = work / package.name
        root = top / "root"
        root.mkdir(parents=True)
        fill(root, package.files)
        (top / "SPECS").mkdir()
        spec_file = top / "SPECS" / f"{package.name}.spec"
        spec_file.write_text(spec(package, root))
        run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", "_buildhost osbuild-test",
             "--define", "use_source_date_epoch_as_buildtime 1", str(spec_file)], env)
        rpms[package.name] = next((top / "RPMS").glob(f"*/{package.name}-1.0-1.*.rpm"))
    return rpms


def checksum(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class BuildRoot:
    """The build-root packages of the session and a library with the runner under test."""

    rpms: dict[str, Path]
    lib: Library

    def checksums(self, *names: str) -> list[str]:
        return [checksum(self.rpms[name]) for name in names]

    def sources(self) -> dict[str, Any]:
        return {"org.osbuild.curl": {"items": {checksum(p): f"file://{p}" for p in self.rpms.values()}}}


@pytest.fixture(scope="session")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildRoot]:
    work = tmp_path_factory.mktemp("rpm-build-root")
    lib = Library(work / "lib")
    for name in ("org.osbuild.rpm", "org.osbuild.rpm.meta.json"):
        shutil.copy2(REPO / "stages" / name, lib.root / "stages" / name)
    for name in ("org.osbuild.fedora30", "org.osbuild.fedora30.meta.json"):
        shutil.copy2(REPO / "runners" / name, lib.root / "runners" / name)
    # The same runner without its meta file: it gets the read-only /etc every runner gets.
    shutil.copy2(REPO / "runners/org.osbuild.fedora30", lib.root / "runners/org.osbuild.test-without-meta")
    lib.use_sources("org.osbuild.curl")
    lib.stage(PROBE_STAGE, PROBE_BODY, schema={"type": "object", "properties": {"report": {"type": "string"}}})
    yield BuildRoot(build_packages(work / "packages"), lib)


BASE_PACKAGES = ("osbuild-br-filesystem", "osbuild-br-glibc", "osbuild-br-python3", "osbuild-br-systemd",
                 "osbuild-br-config")


def manifest(build_root: BuildRoot, runner: str, packages: tuple[str, ...] = BASE_PACKAGES) -> dict[str, Any]:
    """A build pipeline that installs the packages and names `runner`, and a pipeline built with it."""
    rpm = v2_stage("org.osbuild.rpm", inputs={"packages": source_files_input(*build_root.checksums(*packages))})
    return v2_manifest(
        v2_pipeline("build", rpm, runner=runner),
        v2_pipeline("probe", v2_stage(PROBE_STAGE, report="first.json"), v2_stage(PROBE_STAGE, report="second.json"),
                    build="name:build"),
        sources=build_root.sources())


def tree_digest(root: Path) -> dict[str, str]:
    """Every path of a tree with its type and content (or link target), owner and mode."""
    digest = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = path.lstat()
            content = os.readlink(path) if path.is_symlink() else \
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            digest[str(path.relative_to(root))] = f"{content} {st.st_uid}:{st.st_gid} {oct(st.st_mode)}"
    return digest


def host_etc() -> dict[str, str]:
    return {name: hashlib.sha256(Path(f"/etc/{name}").read_bytes()).hexdigest()
            for name in ("passwd", "group", "shadow", "ld.so.cache") if Path(f"/etc/{name}").exists()}


def test_the_fedora_runner_prepares_an_rpm_build_root(build_root: BuildRoot, shared_store: Path, tmp_path: Path) -> None:
    store = shared_store
    m = manifest(build_root, "org.osbuild.fedora38")   # no fedora38 here: it runs with fedora30
    before = build_root.lib.build_tree(m, store, tmp_path / "before", export="build")
    built = tree_digest(before)
    assert (before / "etc/passwd").read_text() == PASSWD
    host = host_etc()
    proc = build_root.lib.run("--store", str(store), "--output-directory", str(tmp_path / "out"),
                              "--export", "probe", "--export", "build", manifest=m)
    first = json.loads((tmp_path / "out/probe/first.json").read_text())
    second = json.loads((tmp_path / "out/probe/second.json").read_text())

    # systemd-sysusers added its user and group to the build root's own passwd and group.
    passwd = first["/etc/passwd"].splitlines()
    assert passwd[0] == PASSWD.strip() and any(line.startswith("osbuildtest:x:") for line in passwd), passwd
    assert any(line.startswith("osbuildgrp:x:") for line in first["/etc/group"].splitlines()), first["/etc/group"]
    # systemd-tmpfiles made its paths, owned by the user sysusers made (and named through NSS's files).
    assert first["tmpfiles-dir"] == {"owner": "osbuildtest", "mode": "0o750"}
    assert first["/var/tmp/osbuild-tmpfiles-file"] == "made by tmpfiles"
    # Its failing line was tolerated, in one line that says so.
    assert re.search(r"systemd-tmpfiles --create exited with status \d+, ignored", proc.stderr + proc.stdout), \
        proc.stderr
    # ldconfig ran with an ld.so.conf the runner made, which includes ld.so.conf.d.
    assert first["/etc/ld.so.conf"] == "include ld.so.conf.d/*.conf\n"
    assert first["ld.so.cache"] == [f"{TEST_LIBS}/libz.so.1"]
    assert first["nsswitch.conf"] is False
    assert first["mtab"] == "../proc/self/mounts"
    assert first["ca-bundle"] is False, "no update-ca-trust in the build root: the step is skipped"
    assert first["pki"] == ["/etc/pki/tls", "/etc/pki/tls/certs", "/etc/pki/tls/certs/test.pem"]
    # Each run gets a fresh copy: what the first stage wrote to /etc is gone for the second.
    assert first["earlier-marker"] is False and second["earlier-marker"] is False
    assert second["/etc/passwd"] == first["/etc/passwd"]

    # Neither the build root in the store nor the host changed.
    assert tree_digest(tmp_path / "out/build") == built
    assert not (tmp_path / "out/build/etc/shadow").exists()
    assert not (tmp_path / "out/build/etc/ld.so.cache").exists()
    assert host_etc() == host
    assert "osbuildtest" not in Path("/etc/passwd").read_text()
    assert not Path("/run/osbuild-tmpfiles-dir").exists() and not Path("/var/tmp/osbuild-tmpfiles-file").exists()


def test_a_failing_sysusers_fails_the_stage_in_one_line(build_root: BuildRoot, shared_store: Path, tmp_path: Path) -> None:
    m = manifest(build_root, "org.osbuild.fedora30", ("osbuild-br-broken-filesystem", *BASE_PACKAGES[1:]))
    proc = build_root.lib.run("--store", str(shared_store), "--output-directory", str(tmp_path / "out"),
                              "--export", "probe", manifest=m, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "org.osbuild.fedora30 runner: error:" in line]
    assert lines and lines[0].strip() == ("org.osbuild.fedora30 runner: error: /usr/bin/systemd-sysusers failed with "
                                          "status 1: Failed to load user database: Is a directory"), proc.stderr


def test_without_writable_etc_the_runner_names_what_is_missing(build_root: BuildRoot, shared_store: Path, tmp_path: Path) -> None:
    m = manifest(build_root, "org.osbuild.test-without-meta")
    proc = build_root.lib.run("--store", str(shared_store), "--output-directory", str(tmp_path / "out"),
                              "--export", "probe", manifest=m, check=False)
    assert proc.returncode == 1, proc.stderr
    assert ('org.osbuild.fedora30 runner: error: /etc/passwd or /etc/group is a read-only bind: this runner\'s '
            'meta file must ask for "writable_etc"') in proc.stdout + proc.stderr, proc.stderr


def test_only_a_runner_may_ask_for_writable_etc(build_root: BuildRoot, tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    lib.stage("org.osbuild.test.etc", "def main(tree, options):\n    return 0\n", writable_etc=True)
    proc = lib.run("--store", str(tmp_path / "store"), manifest=v2_manifest(v2_pipeline("os", v2_stage("org.osbuild.test.etc"))),
                   check=False)
    assert proc.returncode != 0
    assert "writable_etc is for runners only" in proc.stderr, proc.stderr


def test_an_ordinary_users_build_gets_the_same_prepared_root(build_root: BuildRoot, rootless_user: str,
                                                             user_checkout: Path, user_dir: Path) -> None:
    base = Path(str(user_dir) + "-readable")
    base.mkdir(mode=0o755)
    try:
        text = json.dumps(manifest(build_root, "org.osbuild.fedora38"))
        for rpm in build_root.rpms.values():   # where the user can read them
            text = text.replace(f"file://{rpm}", f"file://{shutil.copy(rpm, base)}")
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        lib = readable_copy(build_root.lib.root, base)
        proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"), "--output-directory",
                           str(user_dir / "out"), "--export", "probe", manifest=json.loads(text), libdir=lib)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        first = json.loads((user_dir / "out/probe/first.json").read_text())
    finally:
        shutil.rmtree(base)
    assert any(line.startswith("osbuildtest:x:") for line in first["/etc/passwd"].splitlines()), first["/etc/passwd"]
    assert first["tmpfiles-dir"] == {"owner": "osbuildtest", "mode": "0o750"}
    assert first["ld.so.cache"] == [f"{TEST_LIBS}/libz.so.1"]
