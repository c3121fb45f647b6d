"""org.osbuild.cloud-init: a cloud.cfg.d file as YAML cloud-init reads."""

from __future__ import annotations

import json

import pytest
from conftest import assert_changes, assert_rejected, export_tree, stage_changes

STAGE = "org.osbuild.cloud-init"
BASE = [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc/cloud/cloud.cfg.d", "parents": True}]}}]
CONFIG = {
    "system_info": {"default_user": {"name": "admin"}},
    "ssh_pwauth": False,
    "datasource_list": ["Azure", "None"],
    "datasource": {"Azure": {"apply_network_config": False}},
    "reporting": {"logging": {"type": "log"}, "telemetry": {"type": "hyperv"}},
    "output": {"all": ">> /var/log/cloud-init-all.log"},
    "network": {"config": "disabled"},
}
YAML = """datasource:
  Azure:
    apply_network_config: false
datasource_list: ["Azure", "None"]
network:
  config: "disabled"
output:
  all: ">> /var/log/cloud-init-all.log"
reporting:
  logging:
    type: "log"
  telemetry:
    type: "hyperv"
ssh_pwauth: false
system_info:
  default_user:
    name: "admin"
"""


def test_yaml_with_sorted_keys(shared_store):
    stage = {"name": STAGE, "options": {"filename": "91-azure.cfg", "config": CONFIG}}
    changes = stage_changes(BASE, [stage], shared_store)
    assert_changes(changes, {"added": {"/etc/cloud/cloud.cfg.d/91-azure.cfg": {"text": YAML, "mode": "0644"}}})


def test_the_yaml_means_the_configuration():
    """Read back with a YAML parser when one is installed (cloud-init's own is PyYAML)."""
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(YAML) == json.loads(json.dumps(CONFIG))


def test_the_written_file_parses_back(shared_store):
    yaml = pytest.importorskip("yaml")
    stage = {"name": STAGE, "options": {"filename": "00-user.cfg", "config": {
        "system_info": {"default_user": {"name": "ec2-user"}}, "output": {"init": "| tee -a \"/var/log/x\" : ok"}}}}
    text = (export_tree([*BASE, stage], shared_store) / "etc/cloud/cloud.cfg.d/00-user.cfg").read_text()
    assert yaml.safe_load(text) == stage["options"]["config"]


@pytest.mark.parametrize(("options", "path"), [
    ({"filename": "a.cfg", "config": {"ssh_pwauth": True}, "mode": "0644"}, ".stages[0].options"),
    ({"filename": "a.cfg", "config": {"runcmd": ["reboot"]}}, ".stages[0].options.config"),
    ({"filename": "a.cfg", "config": {}}, ".stages[0].options.config"),
    ({"filename": "a.yaml", "config": {"ssh_pwauth": True}}, ".stages[0].options.filename"),
    ({"filename": "a.cfg", "config": {"datasource_list": ["GCE"]}}, ".stages[0].options.config.datasource_list[0]"),
    ({"filename": "a.cfg", "config": {"ssh_pwauth": "no"}}, ".stages[0].options.config.ssh_pwauth"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)
