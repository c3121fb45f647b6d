"""org.osbuild.script: a shell script run chrooted into the tree."""

from __future__ import annotations

import base64
import functools
import os
import re
import subprocess
from typing import Any

import pytest
from conftest import SOURCE_EPOCH, assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.script"
SHELL = "/usr/bin/dash"


@functools.lru_cache(maxsize=1)
def shell_files() -> list[dict[str, Any]]:
    """The host's dash as the tree's /bin/sh, with the libraries ldd says it loads, at the same paths."""
    ldd = subprocess.run(["ldd", SHELL], check=True, capture_output=True, text=True).stdout
    libraries = sorted(set(re.findall(r"(/\S+) \(0x", ldd)))
    files = []
    for source, target in [(SHELL, "/bin/sh")] + [(path, path) for path in libraries]:
        with open(os.path.realpath(source), "rb") as f:
            files.append({"path": target, "base64": base64.b64encode(f.read()).decode(), "mode": 0o755})
    return files


def base_stages() -> list[dict[str, Any]]:
    """A tree with a working /bin/sh and an /etc."""
    return [
        {"name": "org.osbuild.copy", "options": {"files": shell_files()}},
        {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}},
    ]


def script(text: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"script": text}}


def test_script_runs_with_the_tree_as_root(shared_store):
    text = (
        'echo "hello from $(cd / && echo root)" > /etc/motd\n'
        # The engine's arguments arrive on the stage's stdin; the script must get nothing there.
        "if read -r line; then echo \"$line\" > /etc/stdin; else echo empty > /etc/stdin; fi\n"
        "test -f /bin/sh && echo yes > /etc/has-sh\n"
    )
    changes = stage_changes(base_stages(), [script(text)], shared_store)
    # Exactly these files: the script itself (/.osbuild-script) is gone afterwards.
    assert_changes(changes, {"added": {
        "/etc/motd": {"type": "file", "text": "hello from root\n", "uid": 0},
        "/etc/stdin": {"text": "empty\n"},
        "/etc/has-sh": {"text": "yes\n"},
    }})


def test_a_chrooted_script_has_the_sandboxs_devices_and_a_proc(shared_store):
    # Shell builtins only: the tree has nothing but sh. Reading /proc/self/status proves a proc is there.
    text = (
        "echo discarded > /dev/null\n"
        "for node in null zero full random urandom tty; do if [ -c /dev/$node ]; then echo $node >> /etc/devices; fi; done\n"
        "while read -r key value; do if [ \"$key\" = Name: ]; then echo \"$value\" > /etc/proc-name; fi; done"
        " < /proc/self/status\n"
    )
    dirs = {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/dev"}, {"path": "/proc"}]}}
    changes = stage_changes([*base_stages(), dirs], [script(text)], shared_store)
    # /dev/null was the sandbox's device: nothing landed in the tree's /dev.
    assert_changes(changes, {"added": {"/etc/proc-name": {"type": "file", "text": "sh\n"},
                                       "/etc/devices": {"text": "null\nzero\nfull\nrandom\nurandom\ntty\n"}}})


def test_first_failing_command_fails_the_stage(shared_store):
    report = build_failure([*base_stages(), script("echo before > /etc/before\nfalse\necho after > /etc/after\n")],
                     shared_store)
    assert "error: chroot /run/osbuild/tree /bin/sh -e /.osbuild-script failed with exit status 1" in report


def test_tree_without_a_shell_fails_clearly(shared_store):
    bare = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]
    report = build_failure([*bare, script("echo hi\n")], shared_store)
    assert "error: the tree has no /bin/sh to run the script with" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"script": "true", "interpreter": "/bin/bash"}, ".stages[0].options"),
    ({"script": ["echo", "hi"]}, ".stages[0].options.script"),
    ({"script": ""}, ".stages[0].options.script"),
    ({}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_script_with_debians_tools(debian_base, shared_store):
    """The script runs the tree's own dpkg and adduser, against the tree's own database and account files."""
    base_files = next(deb for deb in debian_base.stages[0]["options"]["debs"] if deb["name"] == "base-files")
    text = (
        "dpkg-query --show --showformat='${Version}\\n' base-files > /etc/base-files-version\n"
        "adduser --system --group --home /var/lib/svc svc\n"
    )
    changes = debian_base.changes([script(text)], shared_store)
    assert_changes(changes, {
        "added": {
            "/etc/base-files-version": {"text": base_files["version"] + "\n"},
            # adduser picks the first free system ids (from 100; the group "users" has gid 100 already).
            "/var/lib/svc": {"type": "dir", "uid": 100, "gid": 101},
            # adduser's lock file stays behind: the script runs as it is, nothing cleans up after it.
            "/run/adduser": {"type": "file", "size": 0},
        },
        "changed": {
            "/etc/passwd": {"lines": {"removed": [], "added": ["svc:x:100:101::/var/lib/svc:/usr/sbin/nologin"]}},
            # The source epoch reaches the script: the password date is fixed.
            "/etc/shadow": {"lines": {"removed": [], "added": [f"svc:!:{SOURCE_EPOCH // 86400}::::::"]}},
            "/etc/group": {"lines": {"removed": [], "added": ["svc:x:101:"]}},
            "/etc/gshadow": {"lines": {"removed": [], "added": ["svc:!::"]}},
            "/etc/passwd-": {}, "/etc/shadow-": {}, "/etc/group-": {}, "/etc/gshadow-": {},
        },
    })
