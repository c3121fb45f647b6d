"""What a stage and an assembler are given: their arguments twice over, the tree (read-only for assemblers)."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

from testlib import TEST_STAGE, Library

ARGUMENTS_PROBE = '''
def main(tree, options):
    from_stdin = sys.stdin.read()
    with open("/run/osbuild/api/arguments", encoding="utf-8") as f:
        from_file = f.read()
    write_report(tree, {
        "stdin": json.loads(from_stdin),
        "file": json.loads(from_file),
        "env": dict(os.environ),
        "tmp": sorted(os.listdir("/tmp")),
        "previous": open(os.path.join(tree, "previous"), encoding="utf-8").read(),
    })
'''

ASSEMBLER_PROBE = '''
def main(tree, output_dir, options):
    def create():
        with open(os.path.join(tree, "new-file"), "w", encoding="utf-8") as f:
            f.write("x")

    def append():
        with open(os.path.join(tree, "etc/hello"), "a", encoding="utf-8") as f:
            f.write("changed")

    report = {
        "arguments": json.loads(sys.stdin.read()),
        "read": attempt(lambda: open(os.path.join(tree, "etc/hello"), encoding="utf-8").read()),
        "create": attempt(create),
        "append": attempt(append),
        "chmod": attempt(lambda: os.chmod(os.path.join(tree, "etc/hello"), 0o777)),
        "unlink": attempt(lambda: os.unlink(os.path.join(tree, "etc/hello"))),
        "mkdir": attempt(lambda: os.mkdir(os.path.join(tree, "newdir"))),
    }
    write_report(output_dir, report)
'''


def test_stdin_and_arguments_file_carry_the_same_arguments(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.args", ARGUMENTS_PROBE)
    options: dict[str, Any] = {"nested": {"b": [1, 2.5, None], "a": "grüße"}, "flag": True}
    manifest = {"source-epoch": 1234567890, "stages": [
        {"name": TEST_STAGE, "options": {"files": {"/previous": "from the stage before"}}},
        {"name": "org.osbuild.test.args", "options": options},
    ]}
    out = tmp_path / "out"
    result = lib.build_json(manifest, tmp_path / "store", "--output-directory", str(out), "--export", "tree")
    report = json.loads((out / "tree" / "report.json").read_text())
    assert report["stdin"] == report["file"]
    arguments = report["file"]
    assert arguments["tree"] == "/run/osbuild/tree"
    assert arguments["options"] == options
    assert arguments["meta"]["id"] == result["pipelines"]["tree"]["stages"][1]["id"]
    assert arguments["meta"]["source-epoch"] == 1234567890
    assert "output_dir" not in arguments
    assert report["env"]["SOURCE_DATE_EPOCH"] == "1234567890"
    assert report["previous"] == "from the stage before"
    assert report["tmp"] == []
    # The host's environment stays outside.
    assert "PYTEST_CURRENT_TEST" not in report["env"]


def test_no_source_date_epoch_without_a_source_epoch(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.args", ARGUMENTS_PROBE)
    manifest = {"stages": [{"name": TEST_STAGE, "options": {"files": {"/previous": ""}}},
                           {"name": "org.osbuild.test.args"}]}
    tree = lib.build_tree(manifest, tmp_path / "store", tmp_path / "out")
    report = json.loads((tree / "report.json").read_text())
    assert "SOURCE_DATE_EPOCH" not in report["env"]
    assert report["file"]["meta"]["source-epoch"] is None
    assert report["file"]["options"] == {}


def test_assembler_sees_the_tree_read_only(lib: Library, tmp_path: Path) -> None:
    lib.assembler("org.osbuild.test.asm-probe", ASSEMBLER_PROBE)
    store = tmp_path / "store"
    manifest = {"stages": [{"name": TEST_STAGE, "options": {"files": {"/etc/hello": "hello"}}}],
                "assembler": {"name": "org.osbuild.test.asm-probe", "options": {"format": "report"}}}
    output = lib.build_tree(manifest, store, tmp_path / "out", export="assembler")
    report = json.loads((output / "report.json").read_text())
    assert report["arguments"]["output_dir"] == "/run/osbuild/output"
    assert report["arguments"]["options"] == {"format": "report"}
    assert report["read"] == {"ok": True, "value": "hello"}
    for what in ("create", "append", "chmod", "unlink", "mkdir"):
        assert report[what]["errno"] == errno.EROFS, (what, report[what])
    # The tree in the store is as the stage left it.
    tree = lib.build_tree(manifest, store, tmp_path / "out2", export="tree")
    assert sorted(p.name for p in tree.rglob("*")) == ["etc", "hello"]
    assert (tree / "etc" / "hello").read_text() == "hello"
    assert (tree / "etc" / "hello").stat().st_mode & 0o777 == 0o644


def test_assembler_output_holds_what_it_wrote(lib: Library, tmp_path: Path) -> None:
    manifest = {"stages": [{"name": TEST_STAGE, "options": {"files": {"/a": "1", "/d/b": "2"}}}],
                "assembler": {"name": "org.osbuild.test.asm", "options": {"random": {"image.raw": 4096}}}}
    output = lib.build_tree(manifest, tmp_path / "store", tmp_path / "out", export="assembler")
    assert sorted(p.name for p in output.iterdir()) == ["image.raw", "listing.json"]
    assert json.loads((output / "listing.json").read_text()) == ["a", "d/b"]
    assert (output / "image.raw").stat().st_size == 4096
