"""The mount-free disk pipeline built by an ordinary user: the bytes of root's build (see test/sandbox/rootless.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import run_osbuild
from test_disk_stages import CONTENT, DISK, IMAGE_STAGES, QEMU_CASES, image, qemu_manifest
from testlib import v2_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
from rootless import rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)


def test_a_rootless_disk_is_the_root_disk(rootless_user: str, user_checkout: Path, user_dir: Path, shared_store: Path,
                                          tmp_path: Path) -> None:
    manifests = {"image": v2_manifest(CONTENT, image(*IMAGE_STAGES)), "converted": qemu_manifest(QEMU_CASES["vmdk"])}
    for export, manifest in manifests.items():
        proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"),
                           "--output-directory", str(user_dir / "out"), "--export", export, manifest=manifest)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_osbuild("--store", str(shared_store), "--output-directory", str(tmp_path / "out"), "--export", export,
                    manifest=manifest)
    for path in (f"image/{DISK}", "converted/disk.img"):
        ours, roots = (user_dir / "out" / path).read_bytes(), (tmp_path / "out" / path).read_bytes()
        assert ours == roots, f"{path}: the rootless build differs from root's"
