"""org.osbuild.users: accounts created and modified with useradd/usermod --root, and SSH keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import assert_changes, build_tree, manifest_of, run_osbuild

from osbuild.treediff import diff

STAGE = "org.osbuild.users"
# The pipelines' source epoch, so the password change date in /etc/shadow is fixed: 2023-11-14.
EPOCH = 1700000000
EPOCH_DAY = EPOCH // 86400
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQ4P5NGNeYgUWFSbCNeCUNLSdTBCHVcu0BLPcFYGL1T alice@laptop"
PASSWORD = "$y$j9T$W1Vdc7QZ0yQu8V4N8N2H8/$7o4jzdaVcUdJ2qGdL0KHk1n6QKvWQ7aaUjAuKsXjWy7"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nusers:x:100:100::/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nwheel:x:10:\nusers:x:100:\n"
SHADOW = "root:*:19000:0:99999:7:::\nusers:*:19000:0:99999:7:::\n"
GSHADOW = "root:*::\nwheel:*::\nusers:*::\n"
LOGIN_DEFS = "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n"
USERADD_DEFAULTS = "SHELL=/bin/bash\n"


def base_stages() -> list[dict[str, Any]]:
    """A small system's account files, useradd's settings, /etc/skel and /home."""
    return [
        {"name": "org.osbuild.copy", "options": {"files": [
            {"path": "/etc/passwd", "text": PASSWD},
            {"path": "/etc/group", "text": GROUP},
            {"path": "/etc/shadow", "text": SHADOW, "mode": 0o640, "gid": 42},
            {"path": "/etc/gshadow", "text": GSHADOW, "mode": 0o640, "gid": 42},
            {"path": "/etc/login.defs", "text": LOGIN_DEFS},
            {"path": "/etc/default/useradd", "text": USERADD_DEFAULTS},
            {"path": "/etc/skel/.profile", "text": "PATH=$HOME/bin:$PATH\n"},
        ]}},
        {"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/home"}]}},
    ]


def users(**accounts: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"users": accounts}}


def changes_at_epoch(base: list[dict[str, Any]], added: list[dict[str, Any]], store: Path, tmp: Path) -> dict[str, Any]:
    """What `added` changes in the tree `base` builds, both built with the source epoch EPOCH."""
    def build(stages: list[dict[str, Any]], name: str) -> Path:
        return build_tree(dict(manifest_of(stages), **{"source-epoch": EPOCH}), store, tmp / name)

    return diff(str(build(base, "before")), str(build(base + added, "after")), text=True)


def failure(stages: list[dict[str, Any]], store: Any) -> str:
    """Build stages that must fail; the engine's report of the failure."""
    proc = run_osbuild("--store", str(store), manifest=manifest_of(stages), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stderr


def test_new_user_with_everything(shared_store, tmp_path):
    alice = {"description": "Alice Liddell", "groups": ["wheel"], "shell": "/bin/sh", "password": PASSWORD, "key": KEY}
    changes = changes_at_epoch(base_stages(), [users(alice=alice)], shared_store, tmp_path)
    assert_changes(changes, {
        "added": {
            # shadow's tools keep the previous version of each file they edit.
            "/etc/passwd-": {"text": PASSWD},
            "/etc/group-": {"text": GROUP},
            "/etc/shadow-": {"text": SHADOW, "mode": "0640", "gid": 42},
            "/etc/gshadow-": {"text": GSHADOW, "mode": "0640", "gid": 42},
            "/home/alice": {"type": "dir", "uid": 1000, "gid": 1000},
            "/home/alice/.profile": {"text": "PATH=$HOME/bin:$PATH\n", "uid": 1000, "gid": 1000},
            "/home/alice/.ssh": {"type": "dir", "mode": "0700", "uid": 1000, "gid": 1000},
            "/home/alice/.ssh/authorized_keys": {"text": KEY + "\n", "mode": "0600", "uid": 1000, "gid": 1000},
        },
        "changed": {
            "/etc/passwd": {"lines": {"removed": [], "added": ["alice:x:1000:1000:Alice Liddell:/home/alice:/bin/sh"]}},
            "/etc/shadow": {"lines": {"removed": [], "added": [f"alice:{PASSWORD}:{EPOCH_DAY}::::::"]}},
            "/etc/group": {"lines": {"removed": ["wheel:x:10:"], "added": ["wheel:x:10:alice", "alice:x:1000:"]}},
            "/etc/gshadow": {"lines": {"removed": ["wheel:*::"], "added": ["wheel:*::alice", "alice:!::"]}},
        },
    })


def test_new_user_with_ids_and_defaults(shared_store, tmp_path):
    changes = changes_at_epoch(base_stages(), [users(bob={"uid": 1500, "gid": 100, "home": "/srv/bob"})],
                               shared_store, tmp_path)
    assert_changes(changes, {
        "added": {
            # An existing primary group: /etc/group and /etc/gshadow are left alone.
            "/etc/passwd-": {}, "/etc/shadow-": {},
            "/srv": {"type": "dir", "uid": 0},
            "/srv/bob": {"type": "dir", "uid": 1500, "gid": 100},
            "/srv/bob/.profile": {"uid": 1500, "gid": 100},
        },
        "changed": {
            # The shell is the default from the tree's /etc/default/useradd; no password: locked.
            "/etc/passwd": {"lines": {"removed": [], "added": ["bob:x:1500:100::/srv/bob:/bin/bash"]}},
            "/etc/shadow": {"lines": {"removed": [], "added": [f"bob:!:{EPOCH_DAY}::::::"]}},
        },
    })


def test_existing_user_is_modified(shared_store, tmp_path):
    base = [*base_stages(), users(alice={"groups": ["wheel"], "shell": "/bin/sh", "key": KEY})]
    alice = {"description": "Alice", "groups": ["users"], "shell": "/bin/bash", "password": PASSWORD,
             "key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 alice@desktop"}
    changes = changes_at_epoch(base, [users(alice=alice)], shared_store, tmp_path)
    assert_changes(changes, {"changed": {
        "/etc/passwd-": {}, "/etc/shadow-": {}, "/etc/group-": {}, "/etc/gshadow-": {},
        "/etc/passwd": {"lines": {"removed": ["alice:x:1000:1000::/home/alice:/bin/sh"],
                                  "added": ["alice:x:1000:1000:Alice:/home/alice:/bin/bash"]}},
        "/etc/shadow": {"lines": {"removed": [f"alice:!:{EPOCH_DAY}::::::"],
                                  "added": [f"alice:{PASSWORD}:{EPOCH_DAY}::::::"]}},
        "/etc/group": {"lines": {"removed": ["wheel:x:10:alice", "users:x:100:"],
                                 "added": ["wheel:x:10:", "users:x:100:alice"]}},
        "/etc/gshadow": {"lines": {"removed": ["wheel:*::alice", "users:*::"],
                                   "added": ["wheel:*::", "users:*::alice"]}},
        "/home/alice/.ssh/authorized_keys": {"lines": {"removed": [KEY],
                                                       "added": ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 alice@desktop"]}},
    }})


def test_tree_without_account_files_fails_clearly(shared_store):
    bare = [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/passwd", "text": PASSWD}]}}]
    report = failure([*bare, users(alice={})], shared_store)
    assert "error: the tree has no /etc/group, /etc/shadow, /etc/gshadow: useradd --root needs" in report


def test_missing_group_fails_with_useradds_reason(shared_store):
    report = failure([*base_stages(), users(alice={"groups": ["docker"]})], shared_store)
    assert "useradd: group 'docker' does not exist" in report
    assert "failed with exit status" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"users": {"alice": {"password": "hunter2"}}}, ".stages[0].options.users.alice.password"),
    ({"users": {"alice": {"uid": "1000"}}}, ".stages[0].options.users.alice.uid"),
    ({"users": {"alice": {"sudo": True}}}, ".stages[0].options.users.alice"),
    ({"users": {"alice": {"key": "/home/alice/.ssh/id_ed25519.pub"}}}, ".stages[0].options.users.alice.key"),
    ({"users": {"alice": {"groups": "wheel"}}}, ".stages[0].options.users.alice.groups"),
    ({"users": {"alice": {"description": "a:b"}}}, ".stages[0].options.users.alice.description"),
    ({"users": {"alice": {"shell": "/bin/sh\n"}}}, ".stages[0].options.users.alice.shell"),
    ({"users": {"Alice Liddell": {}}}, ".stages[0].options.users"),
    ({"users": {}, "groups": {}}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    proc = run_osbuild("--store", str(shared_store), manifest=manifest_of([{"name": STAGE, "options": options}]),
                       check=False)
    assert proc.returncode == 2
    assert f"error: <stdin>: {path}: " in proc.stderr
    assert "Traceback" not in proc.stderr
