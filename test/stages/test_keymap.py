"""org.osbuild.keymap: KEYMAP in /etc/vconsole.conf and Debian's XKB settings in /etc/default/keyboard."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import assert_changes, assert_rejected, stage_changes

STAGE = "org.osbuild.keymap"
# A table in the format of systemd's kbd-model-map: keymap, layout, model, variant, options.
KEYMAP_TABLE = """# console keymap\tlayout\tmodel\tvariant\toptions
de-latin1-nodeadkeys\tde\tpc105\tnodeadkeys\t-
uk\tgb\tpc105\t-\t-
fr-bepo\tfr\tpc104\tbepo\tcompose:ralt
"""


def base_stages() -> list[dict[str, Any]]:
    """A Debian-like tree with its own keymap table."""
    return [{"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/debian_version", "text": "12.0\n"},
        {"path": "/usr/share/systemd/kbd-model-map", "text": KEYMAP_TABLE},
    ]}}]


def other_distribution_stages() -> list[dict[str, Any]]:
    """A tree that is not Debian's."""
    return [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]


def keymap(name: str) -> dict[str, Any]:
    return {"name": STAGE, "options": {"keymap": name}}


def keyboard(model: str, layout: str, variant: str = "", options: str = "") -> str:
    return f'XKBMODEL="{model}"\nXKBLAYOUT="{layout}"\nXKBVARIANT="{variant}"\nXKBOPTIONS="{options}"\nBACKSPACE="guess"\n'


@pytest.mark.parametrize(("name", "expected"), [
    ("uk", keyboard("pc105", "gb")),
    ("de-latin1-nodeadkeys", keyboard("pc105", "de", "nodeadkeys")),
    ("fr-bepo", keyboard("pc104", "fr", "bepo", "compose:ralt")),
    # Not in the table: the layout is the name's leading letters.
    ("de-latin1", keyboard("pc105", "de")),
    ("pl2", keyboard("pc105", "pl")),
])
def test_keymap_on_debian(shared_store, name, expected):
    changes = stage_changes(base_stages(), [keymap(name)], shared_store)
    assert_changes(changes, {"added": {
        "/etc/vconsole.conf": {"type": "file", "text": f"KEYMAP={name}\n", "mode": "0644", "uid": 0},
        "/etc/default": {"type": "dir", "mode": "0755"},
        "/etc/default/keyboard": {"type": "file", "text": expected, "mode": "0644", "uid": 0},
    }})


def test_keymap_keeps_other_settings(shared_store):
    existing = {"name": "org.osbuild.copy", "options": {"files": [
        {"path": "/etc/vconsole.conf", "text": "KEYMAP=us\nFONT=eurlatgr\n"},
        {"path": "/etc/default/keyboard", "text": "# KEYBOARD CONFIGURATION FILE\n\nXKBMODEL=\"pc105\"\n"
                                                  "XKBLAYOUT=\"us\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n"},
    ]}}
    changes = stage_changes([*base_stages(), existing], [keymap("uk")], shared_store)
    assert_changes(changes, {"changed": {
        "/etc/vconsole.conf": {"lines": {"removed": ["KEYMAP=us"], "added": ["KEYMAP=uk"]}},
        "/etc/default/keyboard": {"lines": {"removed": ['XKBLAYOUT="us"'], "added": ['XKBLAYOUT="gb"']}},
    }})


@pytest.mark.skipif(not os.path.isfile("/usr/share/systemd/kbd-model-map"),
                    reason="the build root (the host) has no systemd keymap table")
def test_tree_without_a_table_uses_the_build_roots(shared_store):
    base = [{"name": "org.osbuild.copy", "options": {"files": [{"path": "/etc/debian_version", "text": "12.0\n"}]}}]
    changes = stage_changes(base, [keymap("uk")], shared_store)
    # The rule alone would give layout "uk"; systemd's table says "gb".
    assert 'XKBLAYOUT="gb"' in changes["added"]["/etc/default/keyboard"]["text"].splitlines()


def test_other_distributions_get_only_vconsole_conf(shared_store):
    changes = stage_changes(other_distribution_stages(), [keymap("de-latin1")], shared_store)
    assert_changes(changes, {"added": {"/etc/vconsole.conf": {"text": "KEYMAP=de-latin1\n"}}})


OSBUILD_OPTIONS = {"keymap": "se-dvorak", "x11-keymap": {"layouts": ["cz", "us"]}, "font": "eurlatgr"}


def test_font_and_x11_layouts_elsewhere_go_to_xorg_conf_d(shared_store):
    changes = stage_changes(other_distribution_stages(), [{"name": STAGE, "options": OSBUILD_OPTIONS}], shared_store)
    assert_changes(changes, {"added": {
        "/etc/vconsole.conf": {"text": "KEYMAP=se-dvorak\nFONT=eurlatgr\n"},
        "/etc/X11": {"type": "dir"}, "/etc/X11/xorg.conf.d": {"type": "dir", "mode": "0755"},
        "/etc/X11/xorg.conf.d/00-keyboard.conf": {"mode": "0644", "text": (
            "# Written by osbuild (org.osbuild.keymap).\n"
            'Section "InputClass"\n'
            '        Identifier "system-keyboard"\n'
            '        MatchIsKeyboard "on"\n'
            '        Option "XkbLayout" "cz,us"\n'
            "EndSection\n")},
    }})


def test_x11_layouts_on_debian_go_to_etc_default_keyboard(shared_store):
    options = {"keymap": "de-latin1-nodeadkeys", "x11-keymap": {"layouts": ["de", "us"]}}
    changes = stage_changes(base_stages(), [{"name": STAGE, "options": options}], shared_store)
    assert_changes(changes, {"added": {
        "/etc/vconsole.conf": {"text": "KEYMAP=de-latin1-nodeadkeys\n"},
        "/etc/default": {"type": "dir"},
        "/etc/default/keyboard": {"text": keyboard("pc105", "de,us")},
    }})


@pytest.mark.parametrize(("options", "path"), [
    ({"keymap": "us", "x11": "us"}, ".stages[0].options"),
    ({"keymap": "us", "x11-keymap": {"layouts": []}}, ".stages[0].options.x11-keymap.layouts"),
    ({"keymap": "us", "x11-keymap": {"layouts": ["us"], "variant": "intl"}}, ".stages[0].options.x11-keymap"),
    ({"keymap": "us", "font": "a b"}, ".stages[0].options.font"),
    ({"keymap": ["us"]}, ".stages[0].options.keymap"),
    ({"keymap": "us\n"}, ".stages[0].options.keymap"),
    ({"keymap": "../us"}, ".stages[0].options.keymap"),
    ({}, ".stages[0].options"),
])
def test_bad_options_are_rejected_before_anything_runs(shared_store, options, path):
    assert_rejected(STAGE, options, path, shared_store)


def test_keymap_on_a_debian_tree(debian_base, shared_store):
    """The tree's own systemd table decides the X11 settings: for this keymap it adds an XKB option."""
    changes = debian_base.changes([keymap("de-latin1-nodeadkeys")], shared_store)
    assert_changes(changes, {"added": {
        "/etc/vconsole.conf": {"text": "KEYMAP=de-latin1-nodeadkeys\n", "mode": "0644"},
        "/etc/default/keyboard": {"text": keyboard("pc105", "de", "nodeadkeys", "terminate:ctrl_alt_bksp"), "mode": "0644"},
    }})
