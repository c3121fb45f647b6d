"""Hostile modules with every capability they can get: none of them reaches the host.

One program plays a stage, an assembler and a source fetcher. It holds every
capability a meta file may ask for and tries each way out we know of: remounting the
read-only binds, the chroot-and-.. escape, /proc/*/root, a symlink the engine might
follow, device nodes, mounts of host file systems, loop devices, sysctls, /sys, kernel
modules, the clock, the hostname, host secrets, host processes, processes that outlive
it, and the network. The program reports what it saw, but the tests decide by looking
at the host afterwards: marker files that must not exist, files that must not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from rootless import readable_copy, rootless_user, run_as_user, user_checkout, user_dir  # noqa: F401 (fixtures)
from testlib import TEST_STAGE, Library, wait_until_gone

from osbuild.meta import GRANTABLE_CAPABILITIES

HOSTILE = '''
import ctypes
import signal
import traceback

libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000
CLOCK_REALTIME = 0


def mount(source, target, fstype, flags=0, data=None):
    if libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def write(path):
    with open(path, "a", encoding="utf-8") as f:
        f.write("escaped\\n")


def writes(targets):
    return {path: attempt(lambda p=path: write(p)) for path in targets}


def remount_rw(path):
    mount(None, path, None, MS_REMOUNT | MS_BIND)


def in_child(fn):
    """Run fn in a forked child (it may chroot or setuid); its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            result = fn()
        except BaseException as e:  # the child must always report
            result = {"child-error": traceback.format_exc()}
        os.write(w, json.dumps(result, default=str).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data or b"null")


def chroot_escape(targets):
    def escape():
        os.makedirs("/tmp/jail", exist_ok=True)
        os.chroot("/tmp/jail")
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
        return {"root": sorted(os.listdir("/")), "writes": writes(targets)}
    return in_child(escape)


def through_proc_roots(targets):
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            found[pid] = writes([f"/proc/{pid}/root{t}" for t in targets])
    return found


def read(path):
    with open(path, "rb") as f:
        return f.read(1 << 16).decode(errors="replace")


def syscall(number, *args):
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(number), *args) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def attack(options):
    targets = options["targets"]
    report = {"id": attempt(lambda: read("/proc/self/status").split("CapEff:")[1].split()[0])}
    report["write"] = writes(targets)
    remounts = {}
    for path in ("/usr", "/etc", "/sys", "/run/osbuild/sources", "/run/osbuild/lib/osbuild", "/"):
        remounts[path] = attempt(lambda p=path: remount_rw(p))
    report["remount"] = remounts
    report["write-after-remount"] = writes(targets + options.get("downloads", []))
    report["chroot-escape"] = chroot_escape(targets)
    report["proc-root"] = through_proc_roots(targets)
    os.makedirs("/tmp/m", exist_ok=True)
    report["mount"] = {
        "devtmpfs": attempt(lambda: mount("devtmpfs", "/tmp/m", "devtmpfs")),
        "sysfs": attempt(lambda: mount("sysfs", "/tmp/m", "sysfs")),
        "host-disk": attempt(lambda: mount(options["disk"], "/tmp/m", "ext4", MS_RDONLY)),
    }
    os.makedirs("/tmp/nodes", exist_ok=True)
    report["mknod"] = {
        "null": attempt(lambda: os.mknod("/tmp/nodes/null", 0o666 | 0o020000, os.makedev(1, 3))),
        "disk": attempt(lambda: os.mknod("/tmp/nodes/disk", 0o600 | 0o060000, os.makedev(*options["disk_rdev"]))),
        "loop-control": attempt(lambda: os.mknod("/tmp/nodes/lc", 0o600 | 0o020000, os.makedev(10, 237))),
    }
    report["losetup"] = attempt(lambda: subprocess.run(["losetup", "-f", "--show", "/run/osbuild/lib/osbuild/api.py"],
                                                        check=True, capture_output=True).stdout.decode())
    report["loop-control"] = attempt(lambda: os.open("/dev/loop-control", os.O_RDWR))
    # Opened for writing only: a knob that did open must not be changed by this test.
    report["sysctl"] = {p: attempt(lambda p=p: os.close(os.open(p, os.O_WRONLY)))
                        for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic")}
    report["sys"] = {p: attempt(lambda p=p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT)))
                     for p in ("/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/osbuild-escape")}
    report["module"] = {"delete_module": attempt(lambda: syscall(176, ctypes.c_char_p(b"loop"), 0)),
                        "init_module": attempt(lambda: syscall(175, None, ctypes.c_ulong(0), ctypes.c_char_p(b"")))}
    report["hostname"] = attempt(lambda: socket.sethostname(options["hostname"]))
    timespec = (ctypes.c_long * 2)(1, 0)
    report["clock"] = attempt(lambda: syscall(227, CLOCK_REALTIME, ctypes.byref(timespec)))
    report["secrets"] = {path: attempt(lambda p=path: read(p)) for path in options["secrets"]}
    # The host's victim by its host pid, and any process that shows its marker.
    report["kill"] = attempt(lambda: os.kill(options["victim"], signal.SIGKILL))
    for pid in os.listdir("/proc"):
        if pid.isdigit() and options["marker"] + "-victim" in attempt(lambda p=pid: read(f"/proc/{p}/cmdline")).get("value", ""):
            os.kill(int(pid), signal.SIGKILL)
    report["processes"] = sorted(read(f"/proc/{p}/cmdline") for p in os.listdir("/proc") if p.isdigit())
    report["connect"] = attempt(lambda: socket.create_connection(("127.0.0.1", options["port"]), timeout=3).close())
    # A process that tries to outlive the module: a new session, double forked.
    subprocess.Popen(["setsid", "sh", "-c", f"(sleep 300; : {options['marker']}-left) & sleep 300; : {options['marker']}-left"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    return report


def main(*args):
    report = attack(args[-1])
    write_report(args[1] if len(args) == 3 else args[0], report)
    print("REPORT " + json.dumps(report, default=str), flush=True)
'''

# As a source fetcher: the attack's options are the one item's content, which it then writes.
HOSTILE_SOURCE = HOSTILE + '''

def fetch():
    args = osbuild.api.arguments()
    for checksum, item in args["items"].items():
        payload = item["url"].split(":", 1)[1]
        print("REPORT " + json.dumps(attack(json.loads(payload)), default=str), flush=True)
        with open(os.path.join(args["target"], checksum), "w", encoding="utf-8") as f:
            f.write(payload)


if __name__ == "__main__":
    fetch()
    sys.exit(0)
'''

SYMLINK_NODE = '''
def main(tree, options):
    os.symlink("/etc", os.path.join(tree, "evil"))
    osbuild.api.device_node("/evil/" + options["name"], 1, 3)
'''

OPTIONS_SCHEMA = {"type": "object"}


def host_disk() -> tuple[str, tuple[int, int]]:
    """The block device the host's / is on, and its device number."""
    st = os.stat("/")
    return f"/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}", (os.major(st.st_dev), os.minor(st.st_dev))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on 127.0.0.1: its port, and who connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    connected: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            connected.append(str(peer))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    stop.set()
    thread.join()
    server.close()


class Host:
    """What the hostile module aims at, and how the host looked before."""

    def __init__(self, lib: Library, tmp_path: Path, store: Path | None = None) -> None:
        self.token = secrets.token_hex(8)
        self.marker = f"osbuild-escape-{self.token}"
        self.store = store or tmp_path / "store"
        self.secret = Path(f"/root/{self.marker}-secret")
        self.secret.write_text(f"secret {self.token}\n")
        self.secret.chmod(0o600)
        self.download = (store.parent if store else tmp_path) / "download"
        self.download.write_text(f"a download {self.token}\n")
        self.download_sum = "sha256:" + sha256(self.download)
        self.targets = [f"/usr/{self.marker}", f"/usr/bin/{self.marker}", f"/etc/{self.marker}",
                        f"/root/{self.marker}", f"/var/tmp/{self.marker}", str(self.store / self.marker),
                        str(self.store / "objects" / self.marker), str(lib.root / "stages" / self.marker),
                        str(REPO / self.marker)]
        self.watched = [Path("/usr/bin/true"), Path("/etc/passwd"), lib.root / "stages" / TEST_STAGE,
                        REPO / "osbuild" / "api.py"]
        self.before = {str(p): sha256(p) for p in self.watched}
        self.sysctls = {p: Path(p).read_text() for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname")}
        self.hostname = socket.gethostname()
        self.victim = subprocess.Popen(["sh", "-c", f"sleep 600; : {self.marker}-victim"], start_new_session=True)
        shutil.copy2(REPO / "sources" / "org.osbuild.files", lib.root / "sources")
        shutil.copy2(REPO / "sources" / "org.osbuild.files.meta.json", lib.root / "sources")

    def options(self, port: int) -> dict[str, Any]:
        disk, rdev = host_disk()
        return {"victim": self.victim.pid, "targets": self.targets,
                "downloads": [f"/run/osbuild/sources/org.osbuild.files/{self.download_sum}"],
                "disk": disk, "disk_rdev": list(rdev), "hostname": "escaped", "marker": self.marker,
                "secrets": ["/etc/shadow", str(self.secret), "/etc/ssh/ssh_host_ed25519_key", "/root/.bash_history"],
                "port": port}

    def sources(self) -> dict[str, Any]:
        return {"org.osbuild.files": {"urls": {self.download_sum: f"file://{self.download}"}}}

    def assert_untouched(self, connected: list[str], network_allowed: bool = False) -> None:
        for target in self.targets:
            assert not os.path.lexists(target), f"a hostile module wrote {target}"
        assert not os.path.lexists(f"/etc/{self.marker}"), "the engine followed a symlink of the tree onto the host"
        assert {str(p): sha256(p) for p in self.watched} == self.before, "a host file changed"
        assert {p: Path(p).read_text() for p in self.sysctls} == self.sysctls
        assert socket.gethostname() == self.hostname
        assert self.victim.poll() is None, "a hostile module killed a host process"
        assert wait_until_gone(f"{self.marker}-left") == [], "a hostile module left a process running"
        cached = self.store / "sources" / "org.osbuild.files" / self.download_sum
        if cached.exists():
            assert "sha256:" + sha256(cached) == self.download_sum, "a hostile module changed a cached download"
        if not network_allowed:
            assert connected == [], "a hostile module without network reached a host server"

    def close(self) -> None:
        os.killpg(self.victim.pid, signal.SIGKILL)  # the shell and its sleep
        self.victim.wait()
        self.secret.unlink()
        for target in self.targets:
            if os.path.isfile(target):
                os.unlink(target)


class Build:
    """How a test runs the engine: as root, or as an ordinary user (then from copies it can read)."""

    def __init__(self, request: pytest.FixtureRequest, lib: Library, tmp_path: Path) -> None:
        self.rootless = request.param == "rootless"
        self.lib = lib
        if self.rootless:
            self.user = request.getfixturevalue("rootless_user")
            self.checkout = request.getfixturevalue("user_checkout")
            self.dir = request.getfixturevalue("user_dir")
        else:
            self.dir = tmp_path
        self.store = self.dir / "store"
        self.out = self.dir / "out"

    def run(self, manifest: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        if not self.rootless:
            return self.lib.run("--store", str(self.store), *args, manifest=manifest, check=False)
        libdir = self.dir / "lib"
        if libdir.exists():
            shutil.rmtree(libdir)
        return run_as_user(self.user, self.checkout, "--store", str(self.store), *args, manifest=manifest,
                           libdir=readable_copy(self.lib.root, self.dir))


@pytest.fixture(params=["root", "rootless"])
def build(request: pytest.FixtureRequest, lib: Library, tmp_path: Path) -> Build:
    return Build(request, lib, tmp_path)


@pytest.fixture
def host(lib: Library, tmp_path: Path, build: Build) -> Iterator[Host]:
    h = Host(lib, tmp_path, store=build.store)
    if build.rootless:
        # The user's own file: out of a module's reach as much as the host's.
        precious = build.dir / "precious"
        precious.write_text("the user's own file\n")
        os.chown(precious, os.stat(build.dir).st_uid, os.stat(build.dir).st_gid)
        h.targets += [str(build.dir / h.marker)]
        h.watched.append(precious)
        h.before[str(precious)] = sha256(precious)
    try:
        yield h
    finally:
        h.close()


def report_in(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if "REPORT {" in line]
    assert lines, f"the hostile module printed no report:\n{output[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1].split("REPORT ", 1)[1])
    return report


def assert_refused(report: dict[str, Any], host: Host) -> None:
    """What the module saw agrees with the host: every attempt failed."""
    # The sandbox's own /etc, /root and /var/tmp are its tmpfs: writing there is allowed, the
    # host checks above show it stayed there. The host's /usr and the downloads are bound in.
    shared = [t for t in host.targets if t.startswith("/usr/")]
    assert all(not report["write"][t]["ok"] for t in shared), report["write"]
    after = report["write-after-remount"]
    assert all(not after[t]["ok"] for t in [*shared, *host.options(0)["downloads"]]), after
    assert not report["remount"]["/usr"]["ok"] and not report["remount"]["/run/osbuild/sources"]["ok"]
    assert "child-error" not in report["chroot-escape"], report["chroot-escape"]
    assert all(not report["chroot-escape"]["writes"][t]["ok"] for t in shared)
    assert all(not r[f"/proc/{pid}/root{t}"]["ok"] for pid, r in report["proc-root"].items() for t in shared)
    assert all(not r["ok"] for r in report["mount"].values()), report["mount"]
    assert all(not r["ok"] for r in report["mknod"].values()), report["mknod"]
    assert not report["losetup"]["ok"] and not report["loop-control"]["ok"]
    assert all(not r["ok"] for r in report["sysctl"].values()), report["sysctl"]
    assert all(not r["ok"] for r in report["sys"].values()), report["sys"]
    assert all(not r["ok"] for r in report["module"].values())
    assert not report["clock"]["ok"]
    assert all(not r["ok"] for r in report["secrets"].values()), report["secrets"]
    assert f"secret {host.token}" not in json.dumps(report)
    assert not any(f"{host.marker}-victim" in line for line in report["processes"]), "a host process was visible"
    assert not report["kill"]["ok"]


def hostile_meta() -> dict[str, Any]:
    return {"capabilities": list(GRANTABLE_CAPABILITIES)}


def test_hostile_stage(lib: Library, host: Host, build: Build, listener: tuple[int, list[str]]) -> None:
    lib.stage("org.osbuild.test.hostile", HOSTILE, schema=OPTIONS_SCHEMA, **hostile_meta())
    port, connected = listener
    manifest = {"pipeline": {"stages": [{"name": "org.osbuild.test.hostile", "options": host.options(port)}]},
                "sources": host.sources()}
    proc = build.run(manifest, "--output-directory", str(build.out), "--export", "tree")
    assert proc.returncode == 0, proc.stderr
    host.assert_untouched(connected)
    assert_refused(json.loads((build.out / "tree" / "report.json").read_text()), host)


def test_hostile_assembler(lib: Library, host: Host, build: Build, listener: tuple[int, list[str]]) -> None:
    lib.assembler("org.osbuild.test.hostile", HOSTILE, schema=OPTIONS_SCHEMA, **hostile_meta())
    port, connected = listener
    manifest = {"pipeline": {"stages": [{"name": TEST_STAGE, "options": {"files": {"/a": "a"}}}],
                             "assembler": {"name": "org.osbuild.test.hostile", "options": host.options(port)}},
                "sources": host.sources()}
    proc = build.run(manifest, "--output-directory", str(build.out), "--export", "assembler")
    assert proc.returncode == 0, proc.stderr
    host.assert_untouched(connected)
    assert_refused(json.loads((build.out / "assembler" / "report.json").read_text()), host)


def test_hostile_source(lib: Library, host: Host, build: Build, listener: tuple[int, list[str]]) -> None:
    lib.module("sources", "org.osbuild.test.hostile-source", HOSTILE_SOURCE, OPTIONS_SCHEMA,
               dict(hostile_meta(), network=True))
    port, connected = listener
    payload = json.dumps(host.options(port))
    checksum = "sha256:" + hashlib.sha256(payload.encode()).hexdigest()
    manifest = {"pipeline": {"stages": [{"name": TEST_STAGE, "options": {"files": {"/a": "a"}}}]},
                "sources": {"org.osbuild.test.hostile-source": {"urls": {checksum: f"hostile:{payload}"}}}}
    proc = build.run(manifest)
    assert proc.returncode == 0, proc.stderr
    # A fetcher has the network, as its meta asks; everything else stays out of its reach.
    host.assert_untouched(connected, network_allowed=True)
    assert_refused(report_in(proc.stdout + proc.stderr), host)


def test_a_device_node_behind_a_symlink_is_refused(lib: Library, host: Host, build: Build) -> None:
    lib.stage("org.osbuild.test.symlink-node", SYMLINK_NODE, schema={"type": "object"})
    proc = build.run({"stages": [{"name": "org.osbuild.test.symlink-node", "options": {"name": host.marker}}]})
    assert proc.returncode == 1
    assert "device node" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.lexists(f"/etc/{host.marker}"), "the engine followed the tree's symlink onto the host"
