"""org.osbuild.sshd.config: options sshd reads first, whatever the drop-ins and Match blocks say."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, export_tree, stage_changes

STAGE = "org.osbuild.sshd.config"
# The lines of Debian bookworm's sshd_config that matter here (Fedora's also starts with the Include).
DEBIAN_CONFIG = """
# This is the sshd server system-wide configuration file.

Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
#PasswordAuthentication yes

# Change to yes to enable challenge-response passwords (beware issues with
# some PAM modules and threads)
KbdInteractiveAuthentication no

UsePAM yes
#ClientAliveInterval 0

# Example of overriding settings on a per-user basis
#Match User anoncvs
#	X11Forwarding no
"""
# An older file: no Include, and an active Match block at the end.
OLD_CONFIG = """PasswordAuthentication yes
ClientAliveInterval 30
Match User backup
	PasswordAuthentication yes
"""
OPTIONS = {"PasswordAuthentication": False, "ChallengeResponseAuthentication": True, "ClientAliveInterval": 180,
           "PermitRootLogin": "forced-commands-only"}


def tree(config: str) -> list[dict[str, Any]]:
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/ssh/sshd_config", "text": config},
        {"path": "/etc/ssh/sshd_config.d/50-cloud-init.conf", "text": "PasswordAuthentication yes\n"},
    ]}}]


def sshd(config: dict[str, Any]) -> dict[str, Any]:
    return {"name": STAGE, "options": {"config": config}}


def test_debian_config_gets_its_options_before_the_include(shared_store):
    changes = stage_changes(tree(DEBIAN_CONFIG), [sshd(OPTIONS)], shared_store)
    assert_changes(changes, {"changed": {"/etc/ssh/sshd_config": {"lines": {
        "removed": ["KbdInteractiveAuthentication no"],
        # Before the Include, so they win over 50-cloud-init.conf's PasswordAuthentication.
        "added": ["PasswordAuthentication no", "ChallengeResponseAuthentication yes", "ClientAliveInterval 180",
                  "PermitRootLogin forced-commands-only", "KbdInteractiveAuthentication yes"],
    }}}})
    text = (export_tree([*tree(DEBIAN_CONFIG), sshd(OPTIONS)], shared_store) / "etc/ssh/sshd_config").read_text()
    assert text.index("PermitRootLogin forced-commands-only\nInclude /etc/ssh/sshd_config.d/*.conf\n") > 0


def test_old_config_is_changed_in_place_and_match_blocks_are_left_alone(shared_store):
    stage = sshd({"PasswordAuthentication": False, "ClientAliveInterval": 0, "PermitRootLogin": False})
    changes = stage_changes(tree(OLD_CONFIG), [stage], shared_store)
    assert_changes(changes, {"changed": {"/etc/ssh/sshd_config": {"lines": {
        "removed": ["PasswordAuthentication yes", "ClientAliveInterval 30"],
        "added": ["PasswordAuthentication no", "ClientAliveInterval 0", "PermitRootLogin no"],
    }}}})
    text = (export_tree([*tree(OLD_CONFIG), stage], shared_store) / "etc/ssh/sshd_config").read_text()
    # The new line goes before the Match block, not into it.
    assert text == ("PasswordAuthentication no\nClientAliveInterval 0\nPermitRootLogin no\n"
                    "Match User backup\n\tPasswordAuthentication yes\n")


def test_a_tree_without_sshd_config_fails(shared_store):
    report = build_failure([sshd({"PasswordAuthentication": False})], shared_store)
    assert "error: /etc/ssh/sshd_config does not exist: install the SSH server (openssh-server) first" in report


@pytest.mark.parametrize(("options", "path"), [
    ({"config": {"PasswordAuthentication": False}, "file": "/etc/ssh/x"}, ".stages[0].options"),
    ({"config": {"UsePAM": True}}, ".stages[0].options.config"),
    ({"config": {"PasswordAuthentication": "no"}}, ".stages[0].options.config.PasswordAuthentication"),
    ({"config": {"PermitRootLogin": "without-password"}}, ".stages[0].options.config.PermitRootLogin"),
    ({"config": {"ClientAliveInterval": -1}}, ".stages[0].options.config.ClientAliveInterval"),
    ({"config": {}}, ".stages[0].options.config"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
