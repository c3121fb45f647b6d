"""What one overlay layer changed (osbuild.treediff.layer_diff), on layers made by hand: a file rewritten
in place with its size, mode, owner and mtime kept is a change; sparse files are compared by their bytes."""

from __future__ import annotations

import os
from pathlib import Path

from osbuild import treediff

MIB = 1024 * 1024
EPOCH = 1767225600


def sparse(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    """A file of `size` bytes that holds data only where `writes` puts it."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    os.utime(path, (EPOCH, EPOCH))
    return path


def test_sparse_files_are_compared_by_their_bytes(tmp_path: Path) -> None:
    base = sparse(tmp_path / "a", 1024 * MIB, {MIB: b"boot", 700 * MIB: b"root"})
    with open(base, "rb") as f:
        ranges = treediff.data_ranges(f.fileno(), 1024 * MIB)
    assert len(ranges) == 2 and sum(end - start for start, end in ranges) < 64 * MIB, ranges
    assert treediff.same_content(str(base), str(sparse(tmp_path / "b", 1024 * MIB, {MIB: b"boot", 700 * MIB: b"root"})))
    # One byte, far into the file, differs.
    assert not treediff.same_content(str(base), str(sparse(tmp_path / "c", 1024 * MIB,
                                                           {MIB: b"boot", 700 * MIB: b"rooT"})))
    # The same bytes, where the other file has a hole: written zeroes are no difference.
    zeroes = sparse(tmp_path / "d", 1024 * MIB, {MIB: b"boot", 300 * MIB: bytes(4 * MIB), 700 * MIB: b"root"})
    assert treediff.same_content(str(base), str(zeroes))
    # Data only past the other's last data.
    assert not treediff.same_content(str(base), str(sparse(tmp_path / "e", 1024 * MIB,
                                                           {MIB: b"boot", 700 * MIB: b"root", 1000 * MIB: b"x"})))
    assert not treediff.same_content(str(base), str(sparse(tmp_path / "f", 1023 * MIB, {})))


def test_a_file_rewritten_in_place_with_its_metadata_kept_is_changed(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    sparse(lower / "disk.raw", 64 * MIB, {0: b"old table"})
    sparse(upper / "disk.raw", 64 * MIB, {0: b"new table", 32 * MIB: b"filesystem"})
    # Copied up and untouched: no change.
    sparse(lower / "same.raw", 8 * MIB, {4096: b"data"})
    sparse(upper / "same.raw", 8 * MIB, {4096: b"data"})
    for directory in (lower, upper):
        os.utime(directory, (EPOCH, EPOCH))
    changes = treediff.layer_diff(str(upper), [str(lower)])
    assert changes == {"added": {}, "removed": {},
                       "changed": {"/disk.raw": {"content": ["old", "new"], "size": [64 * MIB, 64 * MIB]}}}
    assert treediff.summary(changes) == {"added": 0, "removed": 0, "changed": 1, "bytes": 64 * MIB}
