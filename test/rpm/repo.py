"""Real RPM repositories for the RPM tests: built with rpmbuild, signed with rpmsign, indexed by
createrepo_c with a comps group, and served over HTTP on 127.0.0.1 by a thread.

Fedora's mirrors cannot be reached from the test machines, so the RPM path is tested against
these. Every package is noarch; scriptlets are written in rpm's built-in Lua, so they run in a
tree that has no shell yet, as the filesystem package's do on Fedora.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GROUP = "osbuild-test"
KEY_UID = "osbuild test key <test@osbuild.invalid>"
OTHER_KEY_UID = "some other key <other@osbuild.invalid>"
# Where the key package puts the key, as fedora-gpg-keys does for Fedora's.
KEY_FILE = "/etc/pki/rpm-gpg/RPM-GPG-KEY-osbuild-test"


@dataclass(frozen=True)
class Package:
    """One noarch package: its files (path -> text), what it requires, and a Lua %post."""

    name: str
    version: str
    release: str = "1"
    epoch: int | None = None
    requires: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    post_lua: str = ""

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch is not None else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.noarch"

    def spec(self) -> str:
        lines = [f"Name: {self.name}", f"Version: {self.version}", f"Release: {self.release}",
                 "Summary: a package of the osbuild tests", "License: MIT", "BuildArch: noarch"]
        if self.epoch is not None:
            lines.append(f"Epoch: {self.epoch}")
        lines += [f"Requires: {r}" for r in self.requires]
        lines += [f"Recommends: {r}" for r in self.recommends]
        lines += ["", "%description", f"{self.name}, built by the osbuild tests.", "", "%install"]
        for path, text in sorted(self.files.items()):
            target = "%{buildroot}" + path
            lines.append(f"mkdir -p $(dirname {target})")
            lines.append(f"cat > {target} <<'EOF'\n{text}EOF")
        for path in self.dirs:
            lines.append(f"mkdir -p %{{buildroot}}{path}")
        lines += ["", "%files"]
        lines += [f"%dir {path}" for path in self.dirs]
        lines += sorted(self.files)
        if self.post_lua:
            lines += ["", "%post -p <lua>", self.post_lua]
        return "\n".join(lines) + "\n"


def lua_write(path: str, text: str) -> str:
    """A Lua scriptlet that writes `text` to `path` in the tree it runs in."""
    return f'local f = assert(io.open("{path}", "w"))\nf:write("{text}\\n")\nf:close()'


# The main repository: a dependency chain with an epoch, a weak dependency, a group, scriptlets.
BASE = Package("osbuild-test-base", "1.0", dirs=("/etc", "/usr/share/osbuild-test"),
               files={"/usr/share/osbuild-test/base.txt": "base\n"},
               post_lua=lua_write("/etc/osbuild-test-base.conf", "written by the %post of osbuild-test-base"))
LIB = Package("osbuild-test-lib", "2.1", "3", epoch=1, requires=("osbuild-test-base",),
              files={"/usr/share/osbuild-test/lib.txt": "lib\n"},
              post_lua='posix.mkdir("/var")\nposix.mkdir("/var/lib")\nposix.mkdir("/var/lib/osbuild-test")\n'
                       + lua_write("/var/lib/osbuild-test/state", "lib post ran"))
APP = Package("osbuild-test-app", "0.9", requires=("osbuild-test-lib >= 1:2.0",), recommends=("osbuild-test-weak",),
              files={"/usr/bin/osbuild-test-app": "#!/bin/sh\necho app\n"})
WEAK = Package("osbuild-test-weak", "1.0", files={"/usr/share/osbuild-test/weak.txt": "weak\n"})
EXTRA = Package("osbuild-test-extra", "1.0", requires=("osbuild-test-base",),
                files={"/usr/share/osbuild-test/extra.txt": "extra\n"})
KEYS = Package("osbuild-test-keys", "1.0", files={KEY_FILE: "(the key)\n"})
MAIN_PACKAGES = (BASE, LIB, APP, WEAK, EXTRA)
COMPS = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">
<comps>
  <group>
    <id>{GROUP}</id>
    <name>osbuild test</name>
    <description>The application and its extras.</description>
    <default>true</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="mandatory">osbuild-test-app</packagereq>
      <packagereq type="default">osbuild-test-extra</packagereq>
    </packagelist>
  </group>
</comps>
"""


# Debian's rpm keeps a database under $HOME (~/.rpmdb); the fixture's tools get a HOME of their own.
HOME = {"HOME": ""}


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    env = dict(env or os.environ, **HOME) if HOME["HOME"] else env
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


class Keys:
    """A throwaway GNUPGHOME with two signing keys: the repositories' key and another one."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True)
        self.env = dict(os.environ, GNUPGHOME=str(home))
        for uid in (KEY_UID, OTHER_KEY_UID):
            run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never"], self.env)
        self.fingerprint = self._fingerprint(KEY_UID)
        self.other_fingerprint = self._fingerprint(OTHER_KEY_UID)
        self.armored = self.export(KEY_UID)
        self.other_armored = self.export(OTHER_KEY_UID)

    def _fingerprint(self, uid: str) -> str:
        for line in run(["gpg", "--batch", "--with-colons", "--fingerprint", uid], self.env).splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise AssertionError(f"no fingerprint for {uid}")

    def export(self, uid: str) -> str:
        return run(["gpg", "--batch", "--armor", "--export", uid], self.env)

    def close(self) -> None:
        """Stop the gpg-agent that key generation and signing started for this GNUPGHOME."""
        run(["gpgconf", "--kill", "gpg-agent"], self.env)

    def sign(self, rpms: list[Path], uid: str = KEY_UID) -> None:
        run(["rpmsign", "--addsign", "--define", f"_gpg_name {uid}", "--define", f"_gpg_path {self.home}",
             "--define", "__gpg /usr/bin/gpg",
             *map(str, rpms)], self.env)


def build_rpms(packages: tuple[Package, ...], work: Path, out: Path) -> list[Path]:
    """rpmbuild every package into `out`; the paths of the .rpm files, in the order given."""
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for package in packages:
        top = work / package.name
        (top / "SPECS").mkdir(parents=True, exist_ok=True)
        spec = top / "SPECS" / f"{package.name}.spec"
        spec.write_text(package.spec())
        # A fixed build time and host make two runs of the fixture give the same packages.
        run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", "_buildhost osbuild-test",
             "--define", "use_source_date_epoch_as_buildtime 1", "--define", "clamp_mtime_to_source_date_epoch 1",
             str(spec)], dict(os.environ, SOURCE_DATE_EPOCH="1700000000"))
        rpm = next((top / "RPMS" / "noarch").glob(f"{package.name}-*.rpm"))
        built.append(Path(shutil.copy(rpm, out / rpm.name)))
    return built


def createrepo(directory: Path, comps: bool = False) -> str:
    """Index a directory of .rpm files; the sha256 of its repomd.xml, as the dnf stage's `checksum`."""
    argv = ["createrepo_c", "--quiet", "--revision", "1", "--set-timestamp-to-revision", "--update"]
    if comps:
        (directory / "comps.xml").write_text(COMPS)
        argv += ["--groupfile", str(directory / "comps.xml")]
    run([*argv, str(directory)])
    return repomd_checksum(directory)


def repomd_checksum(directory: Path) -> str:
    return "sha256:" + hashlib.sha256((directory / "repodata/repomd.xml").read_bytes()).hexdigest()


class Server:
    """A static HTTP server on 127.0.0.1 in a thread, serving one directory until stop()."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(root: Path) -> Iterator[Server]:
    server = Server(root)
    try:
        yield server
    finally:
        server.stop()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: a port the kernel gave and that was closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/repo/"


@dataclass
class Repos:
    """The repositories of a test session, under one directory, and where they are served."""

    root: Path
    keys: Keys
    checksums: dict[str, str]       # repository name -> sha256 of its repomd.xml
    stale_checksum: str             # the `changed` repository's checksum before it changed
    url: str = ""

    def baseurl(self, name: str) -> str:
        return f"{self.url}/{name}/"

    def key_url(self) -> str:
        return f"{self.url}/{os.path.basename(KEY_FILE)}"

    def repo(self, name: str = "main", key: str | None = None, **extra: str) -> dict[str, str]:
        """A dnf stage's repository entry, in the original's shape: baseurl, gpgkey, checksum."""
        entry = {"baseurl": self.baseurl(name), "gpgkey": self.keys.armored if key is None else key,
                 "checksum": self.checksums[name]}
        entry.update(extra)
        return entry


def make_repos(root: Path) -> Repos:
    """Build every repository of the tests under root (about 3 s)."""
    (root / "home").mkdir(parents=True)
    HOME["HOME"] = str(root / "home")
    keys = Keys(root / "gnupg")
    work = root / "build"
    checksums = {}
    main = root / "www/main"
    key_package = Package(KEYS.name, KEYS.version, files={KEY_FILE: keys.armored})
    keys.sign(build_rpms((*MAIN_PACKAGES, key_package), work, main))
    checksums["main"] = createrepo(main, comps=True)
    unsigned = root / "www/unsigned"
    build_rpms((Package("osbuild-test-unsigned", "1.0", files={"/usr/share/osbuild-test/unsigned.txt": "u\n"}),),
               work, unsigned)
    checksums["unsigned"] = createrepo(unsigned)
    wrong = root / "www/wrongkey"
    keys.sign(build_rpms((Package("osbuild-test-wrongkey", "1.0", files={"/usr/share/osbuild-test/w.txt": "w\n"}),),
                         work, wrong), OTHER_KEY_UID)
    checksums["wrongkey"] = createrepo(wrong)
    changed = root / "www/changed"
    keys.sign(build_rpms((BASE,), work, changed))
    stale = createrepo(changed)
    # The repository changes after its checksum was taken, as a mirror does when it syncs.
    keys.sign(build_rpms((Package("osbuild-test-new", "1.0", files={"/usr/share/osbuild-test/new.txt": "n\n"}),),
                         work, changed))
    run(["createrepo_c", "--quiet", "--update", str(changed)])
    checksums["changed"] = repomd_checksum(changed)
    keys.close()
    # The key where a URL can name it, as Fedora publishes its keys.
    (root / "www" / os.path.basename(KEY_FILE)).write_text(keys.armored)
    return Repos(root / "www", keys, checksums, stale)


@pytest.fixture(scope="session")
def rpm_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repos]:
    """The signed test repositories (main with a comps group, unsigned, wrongkey, changed) on 127.0.0.1."""
    repos = make_repos(tmp_path_factory.mktemp("rpm-repos"))
    with serve(repos.root) as server:
        repos.url = server.url
        yield repos
