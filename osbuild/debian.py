"""Debian package handling shared by the Debian stages (runs inside the sandbox).

Standard library only, Python 3.9 syntax: it runs under the build root's Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from osbuild.api import StageError, source_path

SOURCES_LIST_HEADER = "# Written by osbuild from the manifest's apt_sources.\n"


def deb_filename(deb: dict[str, Any]) -> str:
    """The file name apt gives a package in its archive cache (an epoch's colon becomes %3a)."""
    version = deb["version"].replace(":", "%3a")
    return f"{deb['name']}_{version}_{deb['arch']}.deb"


def is_debian(tree: str) -> bool:
    """Whether the tree is a Debian system (or one derived from it): it has /etc/debian_version."""
    return os.path.exists(os.path.join(tree, "etc/debian_version"))


def copy_debs(debs: list[dict[str, Any]], directory: str) -> list[str]:
    """Copy the locked packages from the manifest's sources into directory, under apt's file names.

    Returns the file names, in the order of `debs`. A package whose checksum the
    stage cannot see fails the stage with a line that names the package.
    """
    names = []
    for deb in debs:
        try:
            source = source_path(deb["checksum"])
        except StageError as e:
            raise StageError(f"package {deb['name']} {deb['version']}: {e}") from e
        name = deb_filename(deb)
        shutil.copyfile(source, os.path.join(directory, name))
        names.append(name)
    return names


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse deb822 paragraphs (a Packages file, dpkg status) into dicts; continuation lines are joined."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif line[0] in " \t":
            if key:
                current[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def installed_packages(tree: str) -> list[dict[str, str]]:
    """Name, version and architecture of every package installed in the tree, sorted by name."""
    output = subprocess.run(
        ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "--show",
         "--showformat=${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n"],
        check=True, capture_output=True, text=True,
    ).stdout
    packages = []
    for line in output.splitlines():
        name, version, arch, status = line.split("\t")
        if status == "installed":
            packages.append({"name": name, "version": version, "arch": arch})
    return sorted(packages, key=lambda p: (p["name"], p["arch"]))


def write_apt_sources(tree: str, lines: list[str]) -> None:
    """Point the image's apt at the real mirrors instead of the build's local repository."""
    etc_apt = os.path.join(tree, "etc/apt")
    os.makedirs(os.path.join(etc_apt, "sources.list.d"), exist_ok=True)
    for name in os.listdir(os.path.join(etc_apt, "sources.list.d")):
        os.unlink(os.path.join(etc_apt, "sources.list.d", name))
    with open(os.path.join(etc_apt, "sources.list"), "w", encoding="utf-8") as f:
        f.write(SOURCES_LIST_HEADER)
        for line in lines:
            f.write(line + "\n")
