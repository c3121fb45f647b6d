"""qemu-img's vmdk, vdi, vpc and vhdx files, with their random ids pinned, are the same bytes every time and still valid."""

from __future__ import annotations

import filecmp
import re
import subprocess
import time
from pathlib import Path

import pytest

from osbuild.imageids import crc32c, pin

SEED = "4b7c1a3e-9d52-4c0f-8a61-2f3e5d6c7b8a"
OPTIONS = {"vpc": ["-o", "force_size=on"]}


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("disk") / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["sfdisk", "--quiet", str(path)], input="label: dos\nlabel-id: 0x1234abcd\nstart=2048, type=83\n",
                   text=True, check=True)
    subprocess.run(["mkfs.ext4", "-q", "-E", "offset=1048576", "-U", SEED, str(path), "60M"], check=True)
    return path


def convert(disk: Path, fmt: str, directory: Path) -> Path:
    directory.mkdir()
    target = directory / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *OPTIONS.get(fmt, []), str(disk), str(target)],
                   check=True)
    return target


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("fmt", ["vmdk", "vdi", "vpc", "vhdx"])
def test_pinned_images_are_identical_and_valid(disk: Path, tmp_path: Path, fmt: str) -> None:
    first = convert(disk, fmt, tmp_path / "a")
    time.sleep(1.1)  # vpc stores the time in seconds
    second = convert(disk, fmt, tmp_path / "b")
    assert not filecmp.cmp(first, second, shallow=False), "qemu-img became deterministic: this pinning may be dropped"
    for image in (first, second):
        pin(str(image), fmt, SEED, 1704067200)
    assert filecmp.cmp(first, second, shallow=False)
    if fmt != "vpc":  # qemu-img cannot check vpc
        subprocess.run(["qemu-img", "check", "-q", "-f", fmt, str(first)], check=True)
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(first), str(back)], check=True)
    assert filecmp.cmp(back, disk, shallow=False), "the pinned image no longer holds the same disk"


def test_a_vmdk_whose_cid_qemu_printed_short_is_pinned_too(disk: Path, tmp_path: Path) -> None:
    # qemu prints the CID without leading zeros: about one vmdk in sixteen has a shorter one.
    by_length: dict[bool, Path] = {}
    for attempt in range(400):
        image = convert(disk, "vmdk", tmp_path / f"try-{attempt}")
        cid = re.search(rb"\nCID=([0-9a-f]+)\n", image.read_bytes()[:65536])
        assert cid is not None
        by_length.setdefault(len(cid.group(1)) < 8, image)
        if len(by_length) == 2:
            break
    assert len(by_length) == 2, "no short CID in 400 conversions"
    for image in by_length.values():
        pin(str(image), "vmdk", SEED)
    assert filecmp.cmp(by_length[True], by_length[False], shallow=False)
    subprocess.run(["qemu-img", "check", "-q", "-f", "vmdk", str(by_length[True])], check=True)
