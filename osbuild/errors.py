"""Errors the command line turns into one line for a person and an exit status."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment (manifest, flags, paths, privileges): exit status 2."""

    exit_code = 2


class BuildError(Exception):
    """The build itself failed (a stage, a download, an assembler): exit status 1."""

    exit_code = 1
