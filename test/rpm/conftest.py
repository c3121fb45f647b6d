"""Fixtures of the RPM tests: the test repositories, built and served once per session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from repo import Repos, make_repos, serve


@pytest.fixture(scope="session")
def rpm_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repos]:
    """The signed test repositories (main with a comps group, unsigned, wrongkey, changed) on 127.0.0.1."""
    repos = make_repos(tmp_path_factory.mktemp("rpm-repos"))
    with serve(repos.root) as server:
        repos.url = server.url
        yield repos
