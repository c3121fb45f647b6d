"""With a build pipeline, stages run with its tree as their tools, read-only, and never with the host's /usr.

The build pipeline here makes a minimal root from the host's own Python (the interpreter,
the libraries it links, its standard library): enough to run the runner and Python stages,
and nothing else, so a stage that sees a host tool is seeing the host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testlib import TEST_STAGE, Library, mounts_anywhere, objects_in, stage_call, statuses

MINIMAL_ROOT = '''
import shutil


def copy_file(tree, path):
    """Copy a host file into the tree at its real path, and link the name it was asked by to it."""
    real = os.path.realpath(path)
    os.makedirs(os.path.dirname(tree + real), exist_ok=True)
    shutil.copy2(real, tree + real)
    name = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    if name != real and not os.path.lexists(tree + name):
        os.makedirs(os.path.dirname(tree + name), exist_ok=True)
        os.symlink(real, tree + name)


def main(tree, options):
    for name in ("bin", "sbin", "lib", "lib64"):
        os.symlink("usr/" + name, os.path.join(tree, name))
    for name in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc"):
        os.makedirs(os.path.join(tree, name), exist_ok=True)
    copy_file(tree, "/usr/bin/python3")
    ldd = subprocess.run(["ldd", "/usr/bin/python3"], check=True, capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        libraries = [word for word in line.split() if word.startswith("/")]
        if libraries:
            copy_file(tree, libraries[0])
    # The runner makes the linker's cache with the build root's ldconfig and ld.so.conf.
    copy_file(tree, "/usr/sbin/ldconfig")
    shutil.copy2("/etc/ld.so.conf", os.path.join(tree, "etc/ld.so.conf"))
    shutil.copytree("/etc/ld.so.conf.d", os.path.join(tree, "etc/ld.so.conf.d"))
    stdlib = os.path.dirname(os.__file__)
    shutil.copytree(stdlib, tree + stdlib, symlinks=True, ignore=shutil.ignore_patterns(
        "__pycache__", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
        "pydoc_data", "site-packages", "dist-packages", "config-*"))
    os.makedirs(os.path.join(tree, "usr/share/buildroot"))
    with open(os.path.join(tree, "usr/share/buildroot/marker"), "w", encoding="utf-8") as f:
        f.write(options["marker"])
'''

LOOK_AROUND = '''
def main(tree, options):
    def write_usr():
        with open("/usr/share/buildroot/marker", "a", encoding="utf-8") as f:
            f.write("changed")

    write_report(tree, {
        "marker": open("/usr/share/buildroot/marker", encoding="utf-8").read(),
        "host tools": {p: os.path.exists(p) for p in ("/usr/bin/mount", "/usr/bin/bwrap", "/usr/bin/ldd", "/usr/bin/sh")},
        "python": sys.version,
        "write": attempt(write_usr),
    })
'''


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    library = Library(tmp_path_factory.mktemp("buildroot") / "lib")
    library.stage("org.osbuild.test.minimal-root", MINIMAL_ROOT)
    library.stage("org.osbuild.test.look-around", LOOK_AROUND)
    yield library


def with_build_root(marker: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"build": {"stages": [{"name": "org.osbuild.test.minimal-root", "options": {"marker": marker}}]},
            "stages": stages}


def test_stages_run_with_the_build_root(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    manifest = with_build_root("root one", [{"name": "org.osbuild.test.look-around"}])
    tree = lib.build_tree(manifest, store, tmp_path / "out")
    report = json.loads((tree / "report.json").read_text())
    assert report["marker"] == "root one"
    assert report["host tools"] == {p: False for p in report["host tools"]}, "a host tool is visible"
    assert report["write"]["errno"] == 30  # EROFS: the build root is read-only
    # The build tree in the store did not change either.
    build = lib.build_tree(manifest, store, tmp_path / "out-build", export="build")
    assert (build / "usr/share/buildroot/marker").read_text() == "root one"
    assert (build / "usr/bin/python3").is_symlink()


def test_build_root_change_rebuilds_the_tree(lib: Library, tmp_path: Path) -> None:
    store = tmp_path / "store"
    stages = [stage_call(files={"/a": "a"}), {"name": "org.osbuild.test.look-around"}]
    first = lib.build_json(with_build_root("root one", stages), store)
    assert statuses(first, "build") == ["built"]
    again = lib.build_json(with_build_root("root one", stages), store)
    assert statuses(again, "build") == ["cached"] and statuses(again) == ["cached", "cached"]
    other = lib.build_json(with_build_root("root two", stages), store)
    assert statuses(other) == ["built", "built"]
    tree = lib.build_tree(with_build_root("root two", stages), store, tmp_path / "out")
    assert json.loads((tree / "report.json").read_text())["marker"] == "root two"


def test_store_path_with_unusual_characters(lib: Library, tmp_path: Path) -> None:
    """Spaces, commas, colons and non-ASCII letters in the store's path: overlays and clean-up still work."""
    store = tmp_path / "my störe, v1:2"
    manifest = with_build_root("odd", [stage_call(files={"/a": "a"}), {"name": "org.osbuild.test.look-around"}])
    result = lib.build_json(manifest, store, "--output-directory", str(tmp_path / "out"), "--export", "tree")
    assert result["success"]
    assert json.loads((tmp_path / "out" / "tree" / "report.json").read_text())["marker"] == "odd"
    assert len(objects_in(store)) == 3
    assert sorted(p.name for p in (store / "tmp").iterdir()) == [], "the build left its workspace behind"
    assert mounts_anywhere(str(store)) == []


def test_build_root_without_python_is_one_clear_error(lib: Library, tmp_path: Path) -> None:
    manifest = {"build": {"stages": [stage_call(files={"/usr/bin/sh": "not a shell"})]},
                "stages": [{"name": TEST_STAGE}]}
    proc = lib.run("--store", str(tmp_path / "store"), manifest=manifest, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "python3" in proc.stderr.strip().splitlines()[-1]
