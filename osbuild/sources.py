"""Fetch a manifest's sources by checksum into the store, before any stage runs.

A source module downloads what the store lacks into a directory of this
build's workspace; the engine then verifies every file's checksum itself and
moves it into the store. A file is in the store whole and verified, or not at
all, whatever the module or the network did.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from typing import Any

from osbuild import sandbox
from osbuild.errors import BuildError
from osbuild.monitor import Monitor
from osbuild.objectstore import ObjectStore, remove_tree
from osbuild.pipeline import Manifest, Source

# Every file-like source (org.osbuild.files, org.osbuild.curl, org.osbuild.inline) keeps its files
# in one place, where stages and org.osbuild.files inputs look for them.
FILES = "org.osbuild.files"
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha384", "sha512")
DOWNLOADS = "/run/osbuild/downloads"
RS = "\x1e"


def verify(path: str, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in CHECKSUM_ALGORITHMS:
        return False
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == expected.lower()


def origin(item: dict[str, Any]) -> str:
    """Where an item comes from, for a person: its URL, or the manifest itself."""
    return str(item.get("url", "inline data in the manifest"))


def missing(source: Source, store: ObjectStore) -> dict[str, dict[str, Any]]:
    return {c: item for c, item in source.items.items() if not os.path.exists(store.source_path(FILES, c))}


def fetch(manifest: Manifest, store: ObjectStore, monitor: Monitor, identity: sandbox.Identity, staging: str) -> int:
    """Fetch every item the store lacks; returns how many were fetched.

    The fetcher runs sandboxed as every module does (identity); staging is an empty
    directory for the binds the sandbox needs.
    """
    fetched = 0
    for name, source in sorted(manifest.sources.items()):
        wanted = missing(source, store)
        if not wanted:
            continue
        monitor.log(f"sources: fetching {len(wanted)} of {len(source.items)} files ({name})")
        fetched += _fetch_source(manifest, source, wanted, store, monitor, identity,
                                 os.path.join(staging, source.info.name))
    return fetched


def _fetch_source(manifest: Manifest, source: Source, wanted: dict[str, dict[str, Any]], store: ObjectStore,
                  monitor: Monitor, identity: sandbox.Identity, staging: str) -> int:
    work = store.workspace.subdir("sources-" + source.info.name)
    downloads = os.path.join(work, "downloads")
    api = os.path.join(work, "api")
    os.makedirs(downloads)
    os.makedirs(api)
    arguments = {"items": wanted, "target": DOWNLOADS}
    with open(os.path.join(api, "arguments"), "w", encoding="utf-8") as f:
        json.dump(arguments, f)

    def on_output(line: str) -> None:
        if line.startswith(RS):
            try:
                p = json.loads(line[1:])
                monitor.sources_progress(p["done"], p["total"], p["bytes_done"], p["bytes_total"], p["rate"])
                return
            except (ValueError, KeyError):
                pass
        monitor.stage_output(line)

    # Downloads land owned by the sandbox's root, which is root on disk.
    binds = [sandbox.Bind(downloads, DOWNLOADS, readonly=False, idmapped=True), sandbox.Bind(api, "/run/osbuild/api")]
    # A file: URL names a host file: the module sees that file, read-only, at its own path,
    # owned by the sandbox's root so that it can read it whatever its mode.
    for item in wanted.values():
        parts = urllib.parse.urlsplit(item.get("url", ""))
        local = urllib.parse.unquote(parts.path)
        if parts.scheme == "file" and os.path.isfile(local):
            binds.append(sandbox.Bind(local, local, idmapped=True))
    os.makedirs(staging)
    config = sandbox.SandboxConfig(
        root="/", runner=manifest.host_runner.path, program=source.info.path,
        identity=identity, staging=staging, binds=binds,
        network=source.info.network, writable_etc=manifest.host_runner.writable_etc,
    )
    try:
        result = sandbox.run(config, json.dumps(arguments).encode(), on_output)
        fetched = 0
        bad = []
        os.makedirs(os.path.dirname(store.source_path(FILES, "x")), exist_ok=True)
        for checksum in sorted(wanted):
            path = os.path.join(downloads, checksum)
            if not os.path.exists(path):
                continue
            if not verify(path, checksum):
                bad.append(f"{checksum} from {origin(wanted[checksum])}: content does not match the checksum")
                continue
            os.chown(path, 0, 0)  # the fetcher's root is someone else without root: the store owns its files
            os.chmod(path, 0o644)
            os.rename(path, store.source_path(FILES, checksum))
            fetched += 1
    finally:
        remove_tree(work)
    failed = [c for c in sorted(wanted) if not os.path.exists(store.source_path(FILES, c))]
    if failed or result.returncode != 0:
        reasons = bad + [line[len("error: could not fetch "):] for line in result.tail
                         if line.startswith("error: could not fetch ")]
        if not reasons:
            reasons = [f"{c} from {origin(wanted[c])}" for c in failed] + result.tail[-5:]
        raise BuildError(f"could not fetch {len(failed)} source file(s):\n  " + "\n  ".join(reasons))
    return fetched


def view(manifest: Manifest, store: ObjectStore, directory: str) -> str:
    """A directory holding exactly the manifest's source files (hard links into the store), for stages.

    A stage sees what its manifest lists, not everything earlier builds downloaded,
    so a manifest that forgets a source fails everywhere, not only on a fresh store.
    """
    files = os.path.join(directory, FILES)
    os.makedirs(files, exist_ok=True)
    for source in manifest.sources.values():
        for checksum in source.items:
            link = os.path.join(files, checksum)
            if not os.path.exists(link):
                os.link(store.source_path(FILES, checksum), link)
    return directory
