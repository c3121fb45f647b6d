"""Manifest formats. Each is a module with the same verbs: validate, load, describe, result_ids.

Adding a format touches one file here and `detect` below.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from osbuild.errors import UserError
from osbuild.formats import v1, v2


def parse_json(text: str, origin: str) -> Any:
    """Parse JSON, turning a syntax error into one line naming the file and position."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{origin}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


def detect(description: Any, origin: str) -> ModuleType:
    """The format module for a parsed manifest."""
    if isinstance(description, dict) and "version" in description:
        version = description["version"]
        if version == v2.VERSION:
            return v2
        raise UserError(f"{origin}: manifest format version {version!r} is not supported (this osbuild reads format 1, "
                        f"and format 2 with \"version\": \"2\")")
    return v1
