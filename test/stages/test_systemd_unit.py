"""org.osbuild.systemd.unit and org.osbuild.systemd.unit.create: drop-ins and unit files, in a fixed order."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, build_failure, stage_changes

DROPIN = "org.osbuild.systemd.unit"
CREATE = "org.osbuild.systemd.unit.create"
BASE = [{"name": "org.osbuild.mkdir", "options": {"paths": [
    {"path": "/usr/lib/systemd/system", "parents": True}, {"path": "/usr/lib/systemd/user"},
    {"path": "/etc/systemd/system", "parents": True}, {"path": "/etc/systemd/user"}]}}]


def stage(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "options": options}


def test_dropins_for_system_and_user_units(shared_store):
    env = stage(DROPIN, unit="boltd.service", dropin="30-debug.conf", config={"Service": {"Environment": [
        {"key": "G_MESSAGES_DEBUG", "value": "all"}, {"key": "QUOTED", "value": 'say "100%"'}]}})
    plain = stage(DROPIN, unit="nm-cloud-setup.service", dropin="10-ec2.conf",
                  config={"Service": {"Environment": "NM_CLOUD_SETUP_EC2=yes"}})
    user = stage(DROPIN, unit="grub-boot-success.timer", dropin="10-greenboot.conf", **{"unit-type": "global"},
                 config={"Unit": {"ConditionPathExists": "!/usr/lib/greenboot/greenboot"}})
    changes = stage_changes(BASE, [env, plain, user], shared_store)
    system, users = "/usr/lib/systemd/system", "/usr/lib/systemd/user"
    assert_changes(changes, {"added": {
        f"{system}/boltd.service.d": {"type": "dir", "mode": "0755"},
        f"{system}/boltd.service.d/30-debug.conf": {"mode": "0644", "text": (
            '[Service]\nEnvironment="G_MESSAGES_DEBUG=all"\nEnvironment="QUOTED=say \\"100%%\\""\n')},
        f"{system}/nm-cloud-setup.service.d": {"type": "dir"},
        f"{system}/nm-cloud-setup.service.d/10-ec2.conf": {"text": "[Service]\nEnvironment=NM_CLOUD_SETUP_EC2=yes\n"},
        f"{users}/grub-boot-success.timer.d": {"type": "dir"},
        f"{users}/grub-boot-success.timer.d/10-greenboot.conf": {
            "text": "[Unit]\nConditionPathExists=!/usr/lib/greenboot/greenboot\n"},
    }})


def test_created_units_have_their_sections_in_order_whatever_the_manifest_order(shared_store):
    service = stage(CREATE, filename="make-dir.service", **{"unit-path": "etc"}, config={
        "Install": {"WantedBy": ["local-fs.target"], "RequiredBy": ["multi-user.target"]},
        "Service": {"Type": "oneshot", "RemainAfterExit": True, "ExecStart": ["mkdir -p /etc/mydir", "touch /etc/x"],
                    "Environment": [{"key": "DEBUG", "value": "1"}], "StandardOutput": "journal+console"},
        "Unit": {"Description": "Create directory", "DefaultDependencies": False,
                 "ConditionPathExists": ["|!/etc/x"]},
    })
    mount = stage(CREATE, filename="data.mount", **{"unit-type": "global"},
                  config={"Mount": {"What": "/dev/sdb1", "Where": "/data"}, "Unit": {"DefaultDependencies": True}})
    changes = stage_changes(BASE, [service, mount], shared_store)
    assert_changes(changes, {"added": {
        "/etc/systemd/system/make-dir.service": {"mode": "0644", "uid": 0, "text": (
            "[Unit]\nConditionPathExists=|!/etc/x\nDefaultDependencies=no\nDescription=Create directory\n\n"
            '[Service]\nEnvironment="DEBUG=1"\nExecStart=mkdir -p /etc/mydir\nExecStart=touch /etc/x\n'
            "RemainAfterExit=yes\nStandardOutput=journal+console\nType=oneshot\n\n"
            "[Install]\nRequiredBy=multi-user.target\nWantedBy=local-fs.target\n")},
        "/usr/lib/systemd/user/data.mount": {"text": "[Unit]\nDefaultDependencies=yes\n\n[Mount]\nWhat=/dev/sdb1\nWhere=/data\n"},
    }})


def test_a_unit_name_over_255_bytes_fails(shared_store):
    long_name = "a" * 250 + ".service"
    report = build_failure([*BASE, stage(DROPIN, unit=long_name, dropin="a.conf",
                                         config={"Unit": {"ConditionPathExists": "/a"}})], shared_store)
    assert f"error: {long_name}.d: a drop-in directory name is at most 255 bytes" in report


SERVICE = {"Unit": {"Description": "x"}, "Service": {"ExecStart": ["/bin/true"]}, "Install": {"WantedBy": ["a.target"]}}


@pytest.mark.parametrize(("name", "options", "path"), [
    (DROPIN, {"unit": "a.service", "dropin": "a.conf", "config": {"Service": {"ExecStart": "x"}}},
     ".stages[0].options.config.Service"),
    (DROPIN, {"unit": "a.socket", "dropin": "a.conf", "config": {"Unit": {}}}, ".stages[0].options.unit"),
    (DROPIN, {"unit": "a.service", "dropin": "a.conf", "config": {"Service": {"Environment": [{"key": "1A", "value": ""}]}}},
     ".stages[0].options.config.Service.Environment"),
    (DROPIN, {"unit": "a.service", "dropin": "a.conf", "config": {}, "unit-path": "etc"}, ".stages[0].options"),
    (CREATE, {"filename": "a.service", "config": {"Mount": {"What": "a", "Where": "/a"}}}, ".stages[0].options.config"),
    (CREATE, {"filename": "a.mount", "config": SERVICE}, ".stages[0].options.config"),
    (CREATE, {"filename": "a.service", "config": {**SERVICE, "Service": {"Type": "daemon"}}},
     ".stages[0].options.config.Service.Type"),
    (CREATE, {"filename": "a.service", "config": {**SERVICE, "Service": {"ExecStart": "/bin/true"}}},
     ".stages[0].options.config.Service.ExecStart"),
    (CREATE, {"filename": "a.timer", "config": SERVICE}, ".stages[0].options.filename"),
    (CREATE, {"filename": "a.service", "config": {**SERVICE, "Unit": {"Description": "a\n[Service]"}}},
     ".stages[0].options.config.Unit.Description"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, name, options, path):
    assert_rejected(name, options, path, shared_store)
