"""Format 2's inputs, made on the host side before a stage runs: files and trees under one directory.

For a stage's input NAME the engine fills DIR/NAME, and the sandbox sees DIR
read-only at /run/osbuild/inputs. What the stage's arguments say of each input
is osbuild's shape:

    org.osbuild.files, origin org.osbuild.source:   NAME/CHECKSUM (a hard link into the store's cache)
        {"path": "/run/osbuild/inputs/NAME", "data": {"files": {CHECKSUM: METADATA}}}
    org.osbuild.files, origin org.osbuild.pipeline: NAME/PATH (the file of that tree, bound read-only)
        {"path": "/run/osbuild/inputs/NAME", "data": {"files": {PATH: METADATA}}}   (PATH without the leading /)
    org.osbuild.tree:                                NAME (the whole tree, mounted read-only)
        {"path": "/run/osbuild/inputs/NAME"}

METADATA is the reference's `metadata` option ({} without one). Nothing here runs
code from a stage or from the library directory.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Optional

from osbuild.api import resolve_in
from osbuild.errors import BuildError
from osbuild.mounts import bind
from osbuild.pipeline import FILES_INPUT, SOURCE_ORIGIN, TREE_INPUT, Input, Reference

INPUTS_DIR = "/run/osbuild/inputs"
# How many symlinks a path in a tree may pass through, as the kernel allows.

# Mounts a tree (by object id, None for an empty one) read-only on a directory.
MountTree = Callable[[Optional[str], str], None]


def map_input(item: Input, directory: str, source_path: Callable[[str], str], mount_tree: MountTree,
              scratch: Callable[[], str]) -> dict[str, Any]:
    """Fill `directory` with what the input provides; what the stage's arguments say of it.

    `source_path` gives the store's path of a source file by checksum; `scratch` a fresh empty
    directory of the build's workspace (for a tree that a file is taken from).
    """
    os.mkdir(directory)
    inside = f"{INPUTS_DIR}/{item.name}"
    if item.type == TREE_INPUT:
        mount_tree(item.references[0].key, directory)
        return {"path": inside}
    assert item.type == FILES_INPUT, item.type
    files: dict[str, Any] = {}
    for ref in item.references:
        if item.origin == SOURCE_ORIGIN:
            assert ref.checksum is not None
            os.link(source_path(ref.checksum), os.path.join(directory, ref.checksum))
            files[ref.checksum] = ref.options.get("metadata", {})
        else:
            relative = _map_pipeline_file(item, ref, directory, mount_tree, scratch())
            files[relative] = ref.options.get("metadata", {})
    return {"path": inside, "data": {"files": files}}


def _map_pipeline_file(item: Input, ref: Reference, directory: str, mount_tree: MountTree, tree: str) -> str:
    """Bind one file of another pipeline's tree into the input; its path relative to the input."""
    assert ref.pipeline is not None
    wanted = str(ref.options["file"])
    mount_tree(ref.key, tree)
    source = resolve_in_tree(tree, wanted)
    what = f"input {item.name}: file {wanted} of pipeline {ref.pipeline.name}"
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise BuildError(f"{what}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise BuildError(f"{what}: not a regular file")
    relative = os.path.normpath(wanted).lstrip("/")
    target = os.path.join(directory, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    open(target, "w").close()
    bind(source, target, readonly=True)
    return relative


def resolve_in_tree(root: str, path: str) -> str:
    """The host path of `path` inside the tree at `root`, following symlinks as if root were `/`.

    A symlink in the tree (absolute or with ..) never leads out of it: it is resolved
    against the tree's root, not the host's.
    """
    try:
        return resolve_in(root, path)
    except OSError as e:
        raise BuildError(f"{path}: too many levels of symbolic links in the tree") from e
