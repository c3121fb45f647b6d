"""org.osbuild.udev.rules: rules of key, operator and value, with comments."""

from __future__ import annotations

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

STAGE = "org.osbuild.udev.rules"


def test_rules_and_comments(shared_store):
    stage = {"name": STAGE, "options": {"filename": "/etc/udev/rules.d/68-sriov.rules", "rules": [
        {"comment": ["SR-IOV interfaces are bonded to the synthetic one;", "NetworkManager leaves them alone."]},
        [{"key": "SUBSYSTEM", "op": "==", "val": "net"}, {"key": {"name": "ACTION"}, "op": "==", "val": "add"},
         {"key": {"name": "ATTRS", "arg": "vendor"}, "op": "!=", "val": "0x15b3"},
         {"key": {"name": "ENV", "arg": "NM_UNMANAGED"}, "op": "=", "val": "1"}],
        {"comment": ["two\nlines"]},
        [{"key": {"name": "RUN", "arg": "program"}, "op": "+=", "val": '/bin/sh -c "echo \\d"'}],
    ]}}
    changes = stage_changes([], [stage], shared_store)
    assert_changes(changes, {"added": {
        "/etc": {"type": "dir"}, "/etc/udev": {"type": "dir"}, "/etc/udev/rules.d": {"type": "dir", "mode": "0755"},
        "/etc/udev/rules.d/68-sriov.rules": {"mode": "0644", "text": (
            "# SR-IOV interfaces are bonded to the synthetic one;\n"
            "# NetworkManager leaves them alone.\n"
            'SUBSYSTEM=="net", ACTION=="add", ATTRS{vendor}!="0x15b3", ENV{NM_UNMANAGED}="1"\n'
            "# two\n# lines\n"
            'RUN{program}+="/bin/sh -c \\"echo \\d\\""\n')},
    }})


def test_a_path_through_a_symlink_out_of_the_tree_is_refused(shared_store):
    base = [{"name": "org.osbuild.ln", "options": {"paths": [{"target": "/", "link_name": "/etc", "symbolic": True}]}}]
    report = build_failure([*base, {"name": STAGE, "options": {
        "filename": "/etc/x.rules", "rules": [[{"key": "KERNEL", "op": "==", "val": "sda"}]]}}], shared_store)
    assert "leaves the tree through a symlink" in report


RULE = [{"key": "KERNEL", "op": "==", "val": "sda"}]


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "/etc/udev/rules.d/a.rules", "rules": [RULE], "mode": "0644"}, ".stages[0].options"),
    ({"filename": "/etc/udev/rules.d/a.conf", "rules": [RULE]}, ".stages[0].options.filename"),
    ({"filename": "/etc/../../a.rules", "rules": [RULE]}, ".stages[0].options.filename"),
    ({"filename": "/a.rules", "rules": [[{"key": "KERNEL", "op": "~=", "val": "sda"}]]}, ".stages[0].options.rules[0]"),
    ({"filename": "/a.rules", "rules": [[{"key": "ENV", "op": "==", "val": "x"}]]}, ".stages[0].options.rules[0]"),
    ({"filename": "/a.rules", "rules": [[{"key": "KERNEL", "op": "==", "val": "a\nRUN+=\"x\""}]]}, ".stages[0].options.rules[0]"),
    ({"filename": "/a.rules", "rules": [{"text": "x"}]}, ".stages[0].options.rules[0]"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
