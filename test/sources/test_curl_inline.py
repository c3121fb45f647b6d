"""Format 2's sources: org.osbuild.curl (the fetcher of org.osbuild.files) and org.osbuild.inline, into one verified cache."""

from __future__ import annotations

import base64
import hashlib
import http.server
import lzma
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testlib import Library, objects_in, source_files_input, v2_manifest, v2_pipeline, v2_stage

READER = "org.osbuild.test.files"
# Copies every file of the input `files` into the tree, under its name in the input.
READER_BODY = '''
def main(tree, options):
    item = osbuild.api.arguments()["inputs"]["files"]
    for name in item["data"]["files"]:
        with open(os.path.join(item["path"], name), "rb") as i, open(os.path.join(tree, name.replace(":", "-")), "wb") as o:
            o.write(i.read())
'''
ALGORITHMS = ("md5", "sha1", "sha256", "sha384", "sha512")


def checksum(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


@pytest.fixture
def reader(lib: Library) -> Library:
    lib.use_sources("org.osbuild.inline", "org.osbuild.curl")
    lib.stage(READER, READER_BODY)
    return lib


def reading(sources: dict[str, Any], *checksums: str) -> dict[str, Any]:
    return v2_manifest(v2_pipeline("os", v2_stage(READER, inputs={"files": source_files_input(*checksums)})), sources=sources)


def build(lib: Library, manifest: dict[str, Any], tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / "out"), "--export", "os",
                   manifest=manifest, check=check)


def cached(tmp_path: Path) -> dict[str, bytes]:
    directory = tmp_path / "store/sources/org.osbuild.files"
    return {p.name: p.read_bytes() for p in directory.iterdir()} if directory.exists() else {}


def test_inline_data_in_both_encodings_reaches_the_stage_through_the_cache(reader: Library, tmp_path: Path) -> None:
    plain, packed = b"plain text\n", b"x" * 100000
    items = {checksum(plain): {"encoding": "base64", "data": base64.b64encode(plain).decode()},
             checksum(packed, "sha512"): {"encoding": "lzma+base64", "data": base64.b64encode(lzma.compress(packed)).decode()}}
    build(reader, reading({"org.osbuild.inline": {"items": items}}, *items), tmp_path)
    assert cached(tmp_path) == {checksum(plain): plain, checksum(packed, "sha512"): packed}
    assert (tmp_path / "out/os" / checksum(plain).replace(":", "-")).read_bytes() == plain
    assert (tmp_path / "out/os" / checksum(packed, "sha512").replace(":", "-")).read_bytes() == packed


@pytest.mark.parametrize(("item", "words"), [
    ({"encoding": "base64", "data": base64.b64encode(b"not what the checksum says").decode()},
     "from inline data in the manifest: content does not match the checksum"),
    ({"encoding": "base64", "data": "%%% not base64 %%%"}, "not valid base64"),
    ({"encoding": "lzma+base64", "data": base64.b64encode(b"not lzma").decode()}, "not valid lzma+base64"),
])
def test_bad_inline_data_fails_the_build_and_caches_nothing(reader: Library, tmp_path: Path, item: dict[str, str],
                                                            words: str) -> None:
    wanted = checksum(b"the real content")
    proc = build(reader, reading({"org.osbuild.inline": {"items": {wanted: item}}}, wanted), tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert wanted in proc.stderr and words in proc.stderr
    assert cached(tmp_path) == {}
    assert objects_in(tmp_path / "store") == set()


def test_curl_fetches_every_checksum_kind_once(reader: Library, tmp_path: Path) -> None:
    files = {}
    for algorithm in ALGORITHMS:
        data = f"content checked with {algorithm}\n".encode()
        path = tmp_path / f"{algorithm}.txt"
        path.write_bytes(data)
        files[checksum(data, algorithm)] = (data, path)
    items: dict[str, Any] = {c: f"file://{path}" for c, (_, path) in files.items()}
    md5 = next(c for c in items if c.startswith("md5:"))
    items[md5] = {"url": items[md5]}  # the object form of an item
    proc = build(reader, reading({"org.osbuild.curl": {"items": items}}, *files), tmp_path)
    assert cached(tmp_path) == {c: data for c, (data, _) in files.items()}
    assert f"fetching {len(files)} of {len(files)} files" in proc.stdout
    for _, path in files.values():
        path.unlink()
    again = build(reader, reading({"org.osbuild.curl": {"items": items}}, *files), tmp_path)
    assert "fetching" not in again.stdout, "a second build fetched again"


def test_curl_refuses_a_file_that_does_not_match(reader: Library, tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"tampered")
    wanted = checksum(b"original", "sha384")
    proc = build(reader, reading({"org.osbuild.curl": {"items": {wanted: f"file://{path}"}}}, wanted), tmp_path, check=False)
    assert proc.returncode == 1
    assert f"{wanted} from file://{path}: checksum mismatch" in proc.stderr
    assert cached(tmp_path) == {}


class TLSServer:
    """An HTTPS server with a self-signed certificate, serving one file."""

    def __init__(self, directory: Path, body: bytes) -> None:
        cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/file"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSServer]:
    server = TLSServer(tmp_path, b"served over TLS\n")
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_insecure_skips_the_certificate_check_only_where_asked(reader: Library, tmp_path: Path, tls_server: TLSServer) -> None:
    wanted = checksum(b"served over TLS\n")
    strict = build(reader, reading({"org.osbuild.curl": {"items": {wanted: tls_server.url}}}, wanted), tmp_path, check=False)
    assert strict.returncode == 1
    assert "TLS certificate not trusted" in strict.stderr
    assert cached(tmp_path) == {}
    build(reader, reading({"org.osbuild.curl": {"items": {wanted: {"url": tls_server.url, "insecure": True}}}}, wanted), tmp_path)
    assert cached(tmp_path) == {wanted: b"served over TLS\n"}


def test_curl_reads_urls_as_items_as_osbuild_does(reader: Library, tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"listed under urls\n")
    wanted = checksum(b"listed under urls\n")
    build(reader, reading({"org.osbuild.curl": {"urls": {wanted: f"file://{path}"}}}, wanted), tmp_path)
    assert cached(tmp_path) == {wanted: b"listed under urls\n"}
    both = {"org.osbuild.curl": {"urls": {wanted: f"file://{path}"}, "items": {wanted: f"file://{path}"}}}
    proc = build(reader, reading(both, wanted), tmp_path, check=False)
    assert proc.returncode == 2 and ".sources.org.osbuild.curl: " in proc.stderr
