"""org.osbuild.users: accounts created and modified with useradd/usermod --root, and SSH keys."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from conftest import SOURCE_EPOCH, assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.users"
# Built with a source epoch, so the password change date in /etc/shadow is fixed.
EPOCH_DAY = SOURCE_EPOCH // 86400
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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def users(**accounts: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"users": accounts}}


def test_new_user_with_everything(shared_store):
    alice = {"description": "Alice Liddell", "groups": ["wheel"], "shell": "/bin/sh", "password": PASSWORD, "key": KEY}
    changes = stage_changes(base_stages(), [users(alice=alice)], shared_store, source_epoch=SOURCE_EPOCH)
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


def test_new_user_with_ids_and_defaults(shared_store):
    changes = stage_changes(base_stages(), [users(bob={"uid": 1500, "gid": 100, "home": "/srv/bob"})],
                            shared_store, source_epoch=SOURCE_EPOCH)
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


def test_existing_user_is_modified(shared_store):
    base = [*base_stages(), users(alice={"groups": ["wheel"], "shell": "/bin/sh", "key": KEY})]
    alice = {"description": "Alice", "groups": ["users"], "shell": "/bin/bash", "password": PASSWORD,
             "key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 alice@desktop"}
    changes = stage_changes(base, [users(alice=alice)], shared_store, source_epoch=SOURCE_EPOCH)
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


def test_key_and_keys_and_an_empty_home(shared_store):
    second = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 alice@desktop"
    changes = stage_changes(base_stages(), [users(alice={"home": "", "key": KEY, "keys": [second]})], shared_store,
                            source_epoch=SOURCE_EPOCH)
    keys = changes["added"]["/home/alice/.ssh/authorized_keys"]
    assert keys["text"] == f"{KEY}\n{second}\n"
    [line] = changes["changed"]["/etc/passwd"]["lines"]["added"]
    assert line.startswith("alice:x:1000:1000::/home/alice:")


def test_an_empty_password_is_no_password(shared_store):
    changes = stage_changes(base_stages(), [users(alice={"password": ""})], shared_store, source_epoch=SOURCE_EPOCH)
    assert changes["changed"]["/etc/shadow"]["lines"]["added"] == [f"alice::{EPOCH_DAY}::::::"]


def test_tree_without_account_files_fails_clearly(shared_store):
    bare = [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/passwd", "text": PASSWD}]}}]
    report = build_failure([*bare, users(alice={})], shared_store)
    assert "error: the tree has no /etc/group, /etc/shadow, /etc/gshadow: useradd --root needs" in report


def test_missing_group_fails_with_useradds_reason(shared_store):
    report = build_failure([*base_stages(), users(alice={"groups": ["docker"]})], shared_store)
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
    ({"users": {"alice": {"keys": KEY}}}, ".stages[0].options.users.alice.keys"),
    ({"users": {"alice": {"home": "home/alice"}}}, ".stages[0].options.users.alice.home"),
    ({"users": {}, "groups": {}}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_new_user_on_debian(debian_base, shared_store):
    """Debian's login.defs, /etc/default/useradd and /etc/skel decide what a new account gets."""
    base = debian_base.tree(shared_store)
    alice = {"description": "Alice Liddell", "groups": ["sudo"], "password": PASSWORD, "key": KEY}
    changes = debian_base.changes([users(alice=alice)], shared_store)
    home = {"uid": 1000, "gid": 1000}
    # shadow's tools keep the previous version of each file they edit.
    backups = {f"/etc/{name}-": {"sha256": [sha256(base / f"etc/{name}-"), sha256(base / f"etc/{name}")]}
               for name in ("passwd", "shadow", "group", "gshadow")}
    assert_changes(changes, {
        "added": {
            "/etc/subuid-": {"text": ""}, "/etc/subgid-": {"text": ""},
            "/home/alice": {"type": "dir", "mode": "0755", **home},
            "/home/alice/.bashrc": {"sha256": sha256(base / "etc/skel/.bashrc"), **home},
            "/home/alice/.bash_logout": {"sha256": sha256(base / "etc/skel/.bash_logout"), **home},
            "/home/alice/.profile": {"sha256": sha256(base / "etc/skel/.profile"), **home},
            "/home/alice/.ssh": {"type": "dir", "mode": "0700", **home},
            "/home/alice/.ssh/authorized_keys": {"text": KEY + "\n", "mode": "0600", **home},
        },
        "changed": {
            **backups,
            # Debian's /etc/default/useradd: SHELL=/bin/sh; its login.defs: the password ages 0:99999:7.
            "/etc/passwd": {"lines": {"removed": [], "added": ["alice:x:1000:1000:Alice Liddell:/home/alice:/bin/sh"]}},
            "/etc/shadow": {"lines": {"removed": [], "added": [f"alice:{PASSWORD}:{EPOCH_DAY}:0:99999:7:::"]}},
            "/etc/group": {"lines": {"removed": ["sudo:x:27:"], "added": ["sudo:x:27:alice", "alice:x:1000:"]}},
            "/etc/gshadow": {"lines": {"removed": ["sudo:*::"], "added": ["sudo:*::alice", "alice:!::"]}},
            # Debian's login.defs has SUB_UID_MIN and SUB_GID_MIN: every new user gets subordinate ids.
            "/etc/subuid": {"lines": {"removed": [], "added": ["alice:100000:65536"]}},
            "/etc/subgid": {"lines": {"removed": [], "added": ["alice:100000:65536"]}},
        },
    })
