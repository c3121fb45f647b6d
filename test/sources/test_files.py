"""Sources: files fetched by checksum before any stage runs, in parallel, verified, retried, cached in the store."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_osbuild
from testlib import Library

FILES = {f"file-{i:02d}.bin": os.urandom(20000 + i) for i in range(24)}


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Server:
    """A local HTTP server whose behaviour a test can set, and which counts what it served."""

    def __init__(self) -> None:
        self.files = dict(FILES)
        self.requests: list[str] = []
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.failures: dict[str, int] = {}   # path -> how many 503s to answer first
        self.delay = 0.0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                with server.lock:
                    server.requests.append(name)
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                    failing = server.failures.get(name, 0)
                    if failing:
                        server.failures[name] = failing - 1
                try:
                    time.sleep(server.delay)
                    if failing:
                        self.send_error(503)
                    elif name in server.files:
                        body = server.files[name]
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        self.send_error(404)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def manifest(server: Server, names: list[str], data: dict[str, bytes] | None = None) -> dict[str, Any]:
    """A manifest whose sources are the named files and whose stage copies nothing (sources alone are fetched)."""
    data = data or FILES
    urls = {checksum(data[n]): f"{server.url}/{n}" for n in names}
    return {"pipeline": {"stages": [{"name": "org.osbuild.noop", "options": {"files": sorted(urls)}}]},
            "sources": {"org.osbuild.files": {"urls": urls}}}


def cached(store: Path) -> set[str]:
    directory = store / "sources/org.osbuild.files"
    return set(os.listdir(directory)) if directory.exists() else set()


def leftovers(store: Path) -> list[str]:
    """Partial downloads anywhere in the store."""
    return [str(p) for p in store.rglob("*") if p.name.endswith(".part")]


def test_files_are_fetched_verified_and_cached_and_never_fetched_twice(server: Server, tmp_path: Path) -> None:
    store = tmp_path / "store"
    names = sorted(FILES)
    proc = run_osbuild("--store", str(store), manifest=manifest(server, names))
    assert cached(store) == {checksum(FILES[n]) for n in names}
    for name in names:
        assert (store / "sources/org.osbuild.files" / checksum(FILES[name])).read_bytes() == FILES[name]
    assert sorted(server.requests) == names
    assert f"sources: {len(names)}/{len(names)} files" in proc.stdout
    server.requests.clear()
    run_osbuild("--store", str(store), manifest=manifest(server, names))
    assert server.requests == [], "a second build downloaded again"


def test_at_least_eight_transfers_run_at_once_over_kept_alive_connections(server: Server, tmp_path: Path) -> None:
    server.delay = 0.3
    run_osbuild("--store", str(tmp_path / "store"), manifest=manifest(server, sorted(FILES)))
    assert server.most_in_flight >= 8
    assert server.connections <= 8, "each worker should keep its connection to the server"


def test_a_failing_transfer_is_retried(server: Server, tmp_path: Path) -> None:
    name = sorted(FILES)[0]
    server.failures[name] = 2
    proc = run_osbuild("--store", str(tmp_path / "store"), manifest=manifest(server, [name]))
    assert server.requests == [name, name, name]
    assert proc.stdout.count("retrying") == 2
    assert cached(tmp_path / "store") == {checksum(FILES[name])}


def test_a_checksum_mismatch_names_the_item_and_keeps_nothing(server: Server, tmp_path: Path) -> None:
    store = tmp_path / "store"
    name = sorted(FILES)[0]
    wrong = {name: b"not what the server has"}
    proc = run_osbuild("--store", str(store), manifest=manifest(server, [name], wrong), check=False)
    assert proc.returncode == 1
    assert checksum(wrong[name]) in proc.stderr and name in proc.stderr and "checksum" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert cached(store) == set()
    assert leftovers(store) == []
    assert server.requests == [name], "a wrong file is not retried"


def test_a_missing_file_fails_at_once_and_names_it(server: Server, tmp_path: Path) -> None:
    store = tmp_path / "store"
    absent = {"absent.bin": b"x"}
    proc = run_osbuild("--store", str(store), manifest=manifest(server, ["absent.bin"], absent), check=False)
    assert proc.returncode == 1
    assert "absent.bin" in proc.stderr and "404" in proc.stderr
    assert server.requests == ["absent.bin"]
    assert cached(store) == set() and leftovers(store) == []
    assert not (store / "objects").exists() or os.listdir(store / "objects") == [], "no stage ran"


def test_an_unreachable_server_fails_after_retries(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = {"x.bin": b"x"}
    urls = {checksum(data["x.bin"]): "http://127.0.0.1:9/x.bin"}  # the discard port: nothing listens
    description = {"pipeline": {"stages": []}, "sources": {"org.osbuild.files": {"urls": urls}}}
    proc = run_osbuild("--store", str(store), manifest=description, check=False)
    assert proc.returncode == 1
    assert "x.bin" in proc.stderr and "after 5 attempts" in proc.stderr
    assert proc.stdout.count("retrying") == 4
    assert cached(store) == set() and leftovers(store) == []


LIST_SOURCES = """
def main(tree, options):
    names = sorted(os.listdir("/run/osbuild/sources/org.osbuild.files"))
    with open(os.path.join(tree, "sources.json"), "w") as f:
        json.dump(names, f)
"""


def test_file_urls_work_and_stages_see_only_their_manifest_sources(server: Server, tmp_path: Path) -> None:
    lib = Library(tmp_path / "lib")
    for name in ("org.osbuild.files", "org.osbuild.files.meta.json"):
        shutil.copy2(REPO / "sources" / name, lib.root / "sources" / name)
    lib.stage("test.list-sources", LIST_SOURCES)
    store = tmp_path / "store"
    earlier = sorted(FILES)[0]
    lib.run("--store", str(store), manifest=manifest(server, [earlier]))
    local = tmp_path / "local.bin"
    local.write_bytes(b"local content\n")
    urls = {checksum(local.read_bytes()): f"file://{local}"}
    description = {"pipeline": {"stages": [{"name": "test.list-sources"}]},
                   "sources": {"org.osbuild.files": {"urls": urls}}}
    tree = lib.build_tree(description, store, tmp_path / "out")
    assert json.loads((tree / "sources.json").read_text()) == [checksum(local.read_bytes())], \
        "the stage saw files its manifest does not list"
    assert checksum(FILES[earlier]) in cached(store)


def test_a_missing_local_file_fails_at_once(tmp_path: Path) -> None:
    urls = {checksum(b"gone"): f"file://{tmp_path}/gone.bin"}
    description = {"pipeline": {"stages": []}, "sources": {"org.osbuild.files": {"urls": urls}}}
    start = time.monotonic()
    proc = run_osbuild("--store", str(tmp_path / "store"), manifest=description, check=False)
    assert proc.returncode == 1
    assert "gone.bin: no such file" in proc.stderr
    assert time.monotonic() - start < 10, "a missing local file was retried"


def test_a_locked_manifest_builds_offline_once_its_sources_are_cached(server: Server, tmp_path: Path) -> None:
    store = tmp_path / "store"
    names = sorted(FILES)[:3]
    run_osbuild("--store", str(store), manifest=manifest(server, names))
    server.close()
    offline = manifest(server, names)
    for key in offline["sources"]["org.osbuild.files"]["urls"]:
        offline["sources"]["org.osbuild.files"]["urls"][key] = "http://127.0.0.1:9/unreachable"
    proc = run_osbuild("--store", str(store), manifest=offline)
    assert "sources: fetching" not in proc.stdout
