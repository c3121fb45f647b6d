"""The default image is the same file whatever host userland runs the engine.

The default sample's stages run with the tools of its own `build` pipeline, a tree made
from locked packages. This test builds the locked sample twice, with separate stores:
once with this host as it is, and once with the engine run from a different userland, a
Debian trixie root made here with mmdebstrap (python3, python3-jsonschema, bubblewrap,
mmdebstrap, apt-utils) that holds the checkout read-only and is entered as root with
/proc, /sys and /dev bound (pivot_root). The two qcow2 files must be equal. A mismatch prints the
tree-diff of the two `os` trees and the first offset at which the raw disks differ.

Slow: the other userland (about 40 s), a second build with its downloads (2-3 minutes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_osbuild

from osbuild.treediff import diff

pytestmark = [pytest.mark.image]

SAMPLE = REPO / "samples/debian-bookworm-v2.json"
IMAGE = "qcow2/debian-bookworm.qcow2"
OTHER_RELEASE = "trixie"
OTHER_PACKAGES = ["python3", "python3-jsonschema", "bubblewrap", "mmdebstrap", "apt-utils", "ca-certificates"]
MIRROR = "http://deb.debian.org/debian"


def other_userland(root: Path) -> None:
    """A Debian trixie root that can run the engine: its own python3, bubblewrap and mmdebstrap."""
    subprocess.run(["mmdebstrap", "--mode=root", "--variant=minbase", "--include=" + ",".join(OTHER_PACKAGES),
                    OTHER_RELEASE, str(root), MIRROR], check=True, capture_output=True, text=True)
    for name in ("resolv.conf", "hosts"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    (root / "src").mkdir()


def run_in(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv with root as its /: a mount namespace of its own, the host's /proc, /sys and /dev
    and the checkout (read-only, at /src) bound in, entered with pivot_root (the kernel refuses
    user namespaces to a chrooted process, and the engine needs its / to be a mount point)."""
    script = (
        'set -e; R="$1"; shift\n'
        'mount --bind "$R" "$R"\n'
        'for d in proc sys dev; do mount --rbind "/$d" "$R/$d"; done\n'
        f'mount --bind -o ro "{REPO}" "$R/src"\n'
        'mkdir -p "$R/.oldroot"; cd "$R"; pivot_root . .oldroot\n'
        'exec chroot . /bin/sh -c \'umount -l /.oldroot && cd /src && exec "$@"\' sh "$@"\n'
    )
    return subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", script, "sh", str(root), *argv],
                          capture_output=True, text=True, check=False, timeout=3600)


def first_difference(one: Path, two: Path, work: Path) -> str:
    """Where two disk images first differ, as raw disks (`qemu-img convert`)."""
    raws = []
    for n, image in enumerate((one, two)):
        raw = work / f"disk{n}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
        raws.append(raw)
    chunk = 1 << 20
    with open(raws[0], "rb") as a, open(raws[1], "rb") as b:
        offset = 0
        while True:
            x, y = a.read(chunk), b.read(chunk)
            if x != y:
                at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
                return f"the raw disks first differ at byte {offset + at} (sector {(offset + at) // 512})"
            if not x:
                return "the raw disks are equal: only the qcow2 containers differ"
            offset += len(x)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cross-host") / "locked.json"
    subprocess.run([sys.executable, str(REPO / "tools/osbuild-depsolve-apt"), str(SAMPLE), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


def test_the_default_image_is_the_same_from_another_host_userland(locked: Path, shared_store: Path, tmp_path: Path) -> None:
    manifest: dict[str, Any] = json.loads(locked.read_text())
    assert all(p.get("build") == "name:build" for p in manifest["pipelines"] if p["name"] != "build")
    here = tmp_path / "here"
    run_osbuild("--store", str(shared_store), "--output-directory", str(here), "--export", "qcow2", "--export", "os",
                manifest=manifest, timeout=3600)
    root = tmp_path / "other"
    other_userland(root)
    shutil.copy(locked, root / "locked.json")
    proc = run_in(root, "python3", "-m", "osbuild", "--libdir", "/src", "--store", "/store", "--output-directory", "/out",
                  "--export", "qcow2", "--export", "os", "/locked.json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    release = run_in(root, "sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME")
    assert release.stdout.strip() == OTHER_RELEASE
    mine, theirs = here / IMAGE, root / "out" / IMAGE
    if hashlib.sha256(mine.read_bytes()).digest() != hashlib.sha256(theirs.read_bytes()).digest():
        trees = diff(str(here / "os"), str(root / "out" / "os"))
        pytest.fail("the images differ: " + first_difference(mine, theirs, tmp_path) + "\ntree-diff of the os trees:\n"
                    + json.dumps(trees, indent=1, sort_keys=True)[:20000])
