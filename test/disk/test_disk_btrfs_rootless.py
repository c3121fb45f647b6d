"""org.osbuild.mkfs.btrfs built by an ordinary user (see test/sandbox/rootless.py): the same filesystem as root's
in what is pinned (fsid, label, size, files). Not byte for byte: btrfs-progs makes up UUIDs (docs/modules.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import disktools as dt
from test_disk_btrfs import GPT, MKFS, PART, TRUNCATE, assert_holds_the_content
from test_disk_stages import CONTENT, DISK, image
from testlib import v2_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox"))
from rootless import rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)


def test_a_rootless_user_makes_the_btrfs_filesystem_from_the_tree(rootless_user: str, user_checkout: Path, user_dir: Path,
                                                                   tmp_path: Path) -> None:
    proc = run_as_user(rootless_user, user_checkout, "--store", str(user_dir / "store"),
                       "--output-directory", str(user_dir / "out"), "--export", "image",
                       manifest=v2_manifest(CONTENT, image(TRUNCATE, GPT, MKFS)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_holds_the_content(dt.partition_file(user_dir / "out/image" / DISK, *PART, tmp_path / "btrfs.img"), tmp_path)
