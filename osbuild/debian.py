"""Debian package handling shared by the Debian stages (runs inside the sandbox).

Standard library only, Python 3.9 syntax: it runs under the build root's Python.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

from osbuild.api import StageError, arguments, source_path, tree_path

MS_BIND = 0x1000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)

SOURCES_LIST_HEADER = "# Written by osbuild from the manifest's apt_sources.\n"


def deb_filename(deb: dict[str, Any]) -> str:
    """The file name apt gives a package in its archive cache (an epoch's colon becomes %3a)."""
    version = deb["version"].replace(":", "%3a")
    return f"{deb['name']}_{version}_{deb['arch']}.deb"


def is_debian(tree: str) -> bool:
    """Whether the tree is a Debian system (or one derived from it): it has /etc/debian_version."""
    return os.path.exists(os.path.join(tree, "etc/debian_version"))


PACKAGES_INPUT = "packages"
# The metadata keys of a format-2 packages reference (osbuild's `KIND.FIELD` naming).
METADATA_KEYS = {"name": "deb.name", "version": "deb.version", "arch": "deb.arch"}


def locked_debs(options: dict[str, Any], args: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], str]]:
    """The stage's locked packages, each with the path of its file.

    Format 1 lists them in the `debs` option (files by checksum among the sources);
    format 2 gives them as the `packages` files input, each reference's metadata
    naming its package (`deb.name`, `deb.version`, `deb.arch`), in the order of its references.
    """
    if "debs" in options:
        found = []
        for deb in options["debs"]:
            try:
                found.append((deb, source_path(deb["checksum"])))
            except StageError as e:
                raise StageError(f"package {deb['name']} {deb['version']}: {e}") from e
        return found
    args = arguments() if args is None else args
    entry = args.get("inputs", {}).get(PACKAGES_INPUT)
    if entry is None:
        raise StageError(f"no packages: give the `debs` option (format 1) or the `{PACKAGES_INPUT}` input (format 2)")
    found = []
    for checksum, metadata in entry.get("data", {}).get("files", {}).items():
        missing = [key for key in METADATA_KEYS.values() if not isinstance(metadata.get(key), str)]
        if missing:
            raise StageError(f"input {PACKAGES_INPUT}: {checksum}: its metadata lacks {', '.join(missing)}")
        deb = {field: metadata[key] for field, key in METADATA_KEYS.items()}
        deb["checksum"] = checksum
        found.append((deb, tree_path(entry["path"], checksum)))
    return found


@contextlib.contextmanager
def placed_debs(options: dict[str, Any], directory: str,
                args: dict[str, Any] | None = None) -> Iterator[list[str]]:
    """The stage's locked packages (see locked_debs) in directory, under apt's file names, while the block runs.

    Yields the file names, in the order of the packages. Each name is an empty file
    with the package's file bind-mounted onto it (read-only, as its input is), so that
    no package is copied: a kernel's is 70 MB. Where the sandbox cannot mount, the
    file is copied instead. The names are gone again after the block. A package
    whose file the stage cannot see fails the stage with a line that names the package.
    """
    names: list[str] = []
    mounted: list[str] = []
    try:
        for deb, source in locked_debs(options, args):
            name = deb_filename(deb)
            target = os.path.join(directory, name)
            names.append(name)
            with open(target, "xb"):
                pass
            if _libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None) == 0:
                mounted.append(target)
            else:
                shutil.copyfile(source, target)
        yield names
    finally:
        for target in mounted:
            _libc.umount2(os.fsencode(target), MNT_DETACH)
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass


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
