"""Reading /etc/subuid and /etc/subgid: the range a user builds with, and a range that would meet the sandbox's ids."""

from __future__ import annotations

from pathlib import Path

from osbuild import sandbox


def test_a_users_range_and_an_overlap_with_the_sandbox_ids(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text("alice:100000:65536\nbob:200000:1000\nbroken line\n1001:300000:65536\n"
                    f"carol:{sandbox.ID_BASE + 5}:10\n")
    assert sandbox._subordinate_range(str(path), "alice", 1000) == (100000, 65536)
    assert sandbox._subordinate_range(str(path), "bob", 1002) is None, "too few ids"
    assert sandbox._subordinate_range(str(path), "dave", 1001) == (300000, 65536), "by uid"
    assert sandbox._subordinate_overlap(str(path), sandbox.ID_BASE, sandbox.ID_COUNT) == f"carol:{sandbox.ID_BASE + 5}:10"
    assert sandbox._subordinate_overlap(str(tmp_path / "missing"), sandbox.ID_BASE, sandbox.ID_COUNT) is None
