"""A Debian package whose maintainer script attacks the host, installed by org.osbuild.apt.

The postinst runs chrooted into the tree, as root of the stage's user namespace, in a
stage that holds CAP_SYS_ADMIN. It leaves the chroot (the chroot-and-.. trick), tries to
remount the sandbox's read-only /usr and the downloads, write the host's files and the
cached .debs, mount devtmpfs and make device nodes, and writes down what happened in the
tree. The test decides by looking at the host and the store afterwards.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_osbuild
from rootless import rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)

POSTINST = r'''#!/bin/sh
# Hostile on purpose: a test of the sandbox. Always succeeds, so the host check decides.
report=/var/lib/osbuild-hostile/report
mkdir -p /var/lib/osbuild-hostile
try() { if "$@" >/dev/null 2>&1; then echo "ok $*" >> "$report"; else echo "refused $*" >> "$report"; fi; }
try touch /usr/MARKER
try mount -t devtmpfs devtmpfs /mnt
try mknod /tmp/MARKER-null c 1 3
try mknod /tmp/MARKER-disk b 8 0
# Leave the chroot, then go for the host from the sandbox's root.
perl -e '
  mkdir "/MARKER-jail"; chroot "/MARKER-jail" or exit 1; chdir ".." for 1 .. 64; chroot "." or exit 1;
  if (open(my $r, ">>", "/var/lib/osbuild-hostile/escaped-root")) { print {$r} join(" ", glob("/*")), "\n"; }
  system("mount", "-o", "remount,rw,bind", "/usr"); system("mount", "-o", "remount,rw,bind", "/run/osbuild/sources");
  for my $f ("/usr/MARKER", "/usr/bin/MARKER", "/etc/MARKER", "/root/MARKER", "LIBDIR/MARKER") {
    if (open(my $h, ">>", $f)) { print {$h} "escaped\n"; }
  }
  for my $deb (glob("/run/osbuild/sources/*/*")) { if (open(my $h, ">>", $deb)) { print {$h} "tampered\n"; } }
  printf STDOUT "escape done\n";
' >> "$report" 2>&1 || echo "refused chroot escape" >> "$report"
rmdir /MARKER-jail 2>/dev/null
exit 0
'''


def build_deb(work: Path, marker: str) -> Path:
    root = work / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: osbuild-hostile\nVersion: 1.0\nArchitecture: all\nMaintainer: osbuild tests <tests@localhost>\n"
        "Description: a package whose postinst attacks the host\n")
    postinst = root / "DEBIAN" / "postinst"
    postinst.write_text(POSTINST.replace("MARKER", marker).replace("LIBDIR", str(REPO)))
    postinst.chmod(0o755)
    deb = work / "osbuild-hostile_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["root", "rootless"])
def test_a_hostile_maintainer_script_stays_in_its_sandbox(debian_base, tmp_path: Path, mode: str,
                                                           request: pytest.FixtureRequest) -> None:
    marker = f"osbuild-escape-{secrets.token_hex(6)}"
    work = request.getfixturevalue("user_dir") if mode == "rootless" else tmp_path
    deb = build_deb(work, marker)
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    checksum = "sha256:" + sha256(deb)
    stage = {"name": "org.osbuild.apt", "options": {"debs": [
        {"name": "osbuild-hostile", "version": "1.0", "arch": "all", "checksum": checksum}]}}
    sources = {"org.osbuild.files": {"urls": {checksum: f"file://{deb}"}}}
    store = work / "store"
    watched = [Path("/usr/bin/true"), Path("/etc/passwd"), REPO / "osbuild" / "api.py"]
    before = {str(p): sha256(p) for p in watched}
    manifest = debian_base.manifest([stage], sources=sources)
    args = ("--store", str(store), "--output-directory", str(work / "out"), "--export", "tree")
    if mode == "rootless":
        proc = run_as_user(request.getfixturevalue("rootless_user"), request.getfixturevalue("user_checkout"), *args,
                           manifest=manifest)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        run_osbuild(*args, manifest=manifest)
    report = (work / "out" / "tree" / "var/lib/osbuild-hostile/report").read_text()
    # In the chroot, /usr is the tree's own: the script ran as the tree's root.
    assert f"ok touch /usr/{marker}" in report and (work / "out" / "tree" / "usr" / marker).exists()
    assert "refused mount -t devtmpfs" in report, report
    assert "escape done" in report, report
    assert f"refused mknod /tmp/{marker}-disk" in report, report
    for path in (f"/usr/{marker}", f"/usr/bin/{marker}", f"/etc/{marker}", f"/root/{marker}", str(REPO / marker)):
        assert not os.path.lexists(path), f"the maintainer script wrote the host's {path}"
    assert {str(p): sha256(p) for p in watched} == before
    # Every download in the store is still what its name says.
    for cached in (store / "sources").glob("*/*"):
        assert cached.name == "sha256:" + sha256(cached), f"a maintainer script changed the download {cached.name}"
