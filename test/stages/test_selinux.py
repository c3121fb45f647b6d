"""org.osbuild.selinux: the tree's paths labelled from its policy's file_contexts (security.selinux).

setfiles computes the labels in the sandbox; the engine writes them after the stage. They
travel into the tar and ext4 outputs.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, build_tree, export_tree, manifest_of, stage_changes

STAGE = "org.osbuild.selinux"
FILE_CONTEXTS = "etc/selinux/test/contexts/files/file_contexts"
# A policy's file_contexts in miniature: regexes, a file type, <<none>>.
CONTEXTS = (
    "/.*\tsystem_u:object_r:default_t:s0\n"
    "/\t-d\tsystem_u:object_r:root_t:s0\n"
    "/etc(/.*)?\tsystem_u:object_r:etc_t:s0\n"
    "/etc/shadow\t--\tsystem_u:object_r:shadow_t:s0\n"
    "/usr/bin(/.*)?\tsystem_u:object_r:bin_t:s0\n"
    "/bin\t-l\tsystem_u:object_r:bin_t:s0\n"
    "/tmp/.*\t<<none>>\n"
)


def label(context: str) -> str:
    """How a tree diff shows a security.selinux value: the context and its NUL, in hex."""
    return "hex:" + (context + "\0").encode().hex()


def selinux(file_contexts: str = FILE_CONTEXTS) -> dict[str, Any]:
    return {"name": STAGE, "options": {"file_contexts": file_contexts}}


def base_stages() -> list[dict[str, Any]]:
    return [
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": "/" + FILE_CONTEXTS, "text": CONTEXTS},
            {"path": "/etc/shadow", "text": "root:*:19000:0:99999:7:::\n", "mode": 0o640},
            {"path": "/usr/bin/tool", "text": "#!/bin/sh\n", "mode": 0o755},
            {"path": "/tmp/scratch", "text": "left alone\n"},
            {"path": "/srv/a name with spaces from here to there", "text": "x\n"},
        ]}},
        {"name": "org.osbuild.ln", "options": {"paths": [{"target": "usr/bin", "link_name": "/bin", "symbolic": True}]}},
    ]


def test_labels_from_file_contexts(shared_store):
    changes = stage_changes(base_stages(), [selinux()], shared_store)
    etc, default = label("system_u:object_r:etc_t:s0"), label("system_u:object_r:default_t:s0")
    expected = {path: {"xattrs": [None, {"security.selinux": value}]} for path, value in {
        "/": label("system_u:object_r:root_t:s0"),
        "/etc": etc, "/etc/selinux": etc, "/etc/selinux/test": etc, "/etc/selinux/test/contexts": etc,
        "/etc/selinux/test/contexts/files": etc, "/" + FILE_CONTEXTS: etc,
        "/etc/shadow": label("system_u:object_r:shadow_t:s0"),
        "/usr": default, "/usr/bin": label("system_u:object_r:bin_t:s0"),
        "/usr/bin/tool": label("system_u:object_r:bin_t:s0"),
        # The symlink itself, by its own rule (-l); its target keeps its own label.
        "/bin": label("system_u:object_r:bin_t:s0"),
        "/srv": default, "/srv/a name with spaces from here to there": default,
        "/tmp": default,
    }.items()}
    assert_changes(changes, {"changed": expected})
    # Only the label changed: contents, modes and owners are as they were.
    assert all(set(entry) == {"xattrs"} for entry in changes["changed"].values()), changes["changed"]


def test_hard_links_stay_one_file_when_labelled(shared_store):
    """Labelling copies each name up into the stage's layer on its own; the engine links them again."""
    stages = [*base_stages(), {"name": "org.osbuild.ln", "options": {"paths": [
        {"target": "/usr/bin/tool", "link_name": "/usr/bin/tool-again"}]}}]
    for tree in (export_tree(stages, shared_store), export_tree([*stages, selinux()], shared_store)):
        first, second = (os.stat(tree / "usr/bin" / name) for name in ("tool", "tool-again"))
        assert (first.st_ino, first.st_nlink) == (second.st_ino, 2), tree
    assert os.getxattr(tree / "usr/bin/tool-again", "security.selinux") == b"system_u:object_r:bin_t:s0\0"
    # The directory keeps its time: only the labels changed.
    changes = stage_changes(stages, [selinux()], shared_store)
    assert all(set(entry) == {"xattrs"} for entry in changes["changed"].values()), changes["changed"]
    assert "/usr/bin/tool-again" in changes["changed"]


def tar_labels(listing: str) -> dict[str, str | None]:
    """Each member of a `tar --selinux -tvv` listing with the type of its label (an `s: CONTEXT` line after it)."""
    labels: dict[str, str | None] = {}
    member = ""
    for line in listing.splitlines():
        if line.startswith("  s: "):
            labels[member] = line[5:].split(":")[2]
        else:
            member = line.split(" -> ")[0].split(maxsplit=5)[5]
            labels[member] = None
    return labels


def test_labels_survive_into_tar_and_ext4(shared_store, tmp_path):
    stages = [*base_stages(), selinux()]
    tar = build_tree(manifest_of(stages, assembler={"name": "org.osbuild.tar", "options": {"filename": "tree.tar"}}),
                     shared_store, tmp_path / "tar", export="assembler") / "tree.tar"
    listing = subprocess.run(["tar", "--xattrs", "--selinux", "--xattrs-include=*", "-tvvf", str(tar)],
                             capture_output=True, text=True, check=True).stdout
    with tarfile.open(tar) as archive:
        shadow = archive.getmember("./etc/shadow")
    # The pax record GNU tar --selinux writes: the context without its NUL.
    assert shadow.pax_headers.get("RHT.security.selinux") == "system_u:object_r:shadow_t:s0", shadow.pax_headers
    assert tar_labels(listing) == {
        "./": "root_t", "./bin": "bin_t", "./etc/": "etc_t", "./etc/selinux/": "etc_t", "./etc/selinux/test/": "etc_t",
        "./etc/selinux/test/contexts/": "etc_t", "./etc/selinux/test/contexts/files/": "etc_t",
        "./" + FILE_CONTEXTS: "etc_t", "./etc/shadow": "shadow_t", "./srv/": "default_t",
        "./srv/a name with spaces from here to there": "default_t", "./tmp/": "default_t", "./tmp/scratch": None,
        "./usr/": "default_t", "./usr/bin/": "bin_t", "./usr/bin/tool": "bin_t",
    }

    image = build_tree(manifest_of(stages, assembler={"name": "org.osbuild.rawfs", "options": {
        "filename": "root.ext4", "root_fs_uuid": "6e4ff95f-f662-45ee-a82a-bdf44a2d0b75", "size": 16 * 1024 * 1024}}),
        shared_store, tmp_path / "ext4", export="assembler") / "root.ext4"
    for path, context in (("/etc/shadow", "shadow_t"), ("/usr/bin/tool", "bin_t"), ("/bin", "bin_t"),
                          ("/", "root_t")):
        out = subprocess.run(["debugfs", "-R", f"ea_get {path} security.selinux", str(image)],
                             capture_output=True, text=True, check=True).stdout
        assert f"system_u:object_r:{context}:s0" in out, (path, out)
    listed = subprocess.run(["debugfs", "-R", "ea_list /etc/shadow", str(image)], capture_output=True, text=True,
                            check=True).stdout
    assert "security.selinux" in listed and "shadow_t" in listed, listed


def test_missing_file_contexts_fails_in_one_line(shared_store):
    report = build_failure([*base_stages(), selinux("etc/selinux/none/file_contexts")], shared_store)
    assert "file_contexts: etc/selinux/none/file_contexts is not a file in the tree" in report
    assert "Traceback" not in report


@pytest.mark.parametrize(("options", "path"), [
    ({}, ".stages[0].options"),
    ({"file_contexts": FILE_CONTEXTS, "labels": {}}, ".stages[0].options"),
    ({"file_contexts": ""}, ".stages[0].options.file_contexts"),
    ({"file_contexts": 1}, ".stages[0].options.file_contexts"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_debian_tree_labelled_with_debians_policy(debian_base, shared_store):
    """Debian's selinux-policy-default, installed by the apt stage, labels a Debian tree."""
    locked = debian_base.lock_apt(["selinux-policy-default"])
    policy = locked["pipeline"]["stages"][1:]
    labelled = [*policy, selinux("/etc/selinux/default/contexts/files/file_contexts")]
    changes = debian_base.changes(labelled, shared_store, sources=locked["sources"], on=policy)
    changed = changes["changed"]
    assert not changes["added"] and not changes["removed"]
    expected = {
        "/etc/shadow": "shadow_t", "/etc/passwd": "etc_t", "/usr/bin/bash": "shell_exec_t",
        "/usr/lib/systemd/systemd": "init_exec_t", "/var/log": "var_log_t",
        "/root": "user_home_dir_t", "/usr/bin": "bin_t",
    }
    got = {path: bytes.fromhex(changed[path]["xattrs"][1]["security.selinux"][4:]).decode().split(":")[2]
           for path in expected}
    assert got == expected
    # Every path of the tree got a label, hard links under each of their names (perl5.36.0 is perl), but
    # /proc, which setfiles leaves to the kernel; and only the labels changed.
    tree = debian_base.export(labelled, shared_store, sources=locked["sources"])
    unlabelled = [str(path.relative_to(tree)) for path in [tree, *tree.rglob("*")]
                  if "security.selinux" not in os.listxattr(path, follow_symlinks=False)]
    assert unlabelled == ["proc"]
    assert os.getxattr(tree / "usr/bin/perl5.36.0", "security.selinux") == b"system_u:object_r:bin_t:s0\0"
    assert all(set(entry) == {"xattrs"} for entry in changed.values())
