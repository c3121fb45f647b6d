"""A stage cannot reach the host: not its files, its processes, its network, or its mount table.

Each test writes a stage that tries to break out, runs it through the real engine, and
asserts both what the stage saw (a report it leaves in its tree) and that the host is
unchanged. The stages are written to succeed whatever they find, so the assertions here,
not an exit status, decide.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

from testlib import TEST_STAGE, Library, mounts_anywhere, mounts_mentioning, objects_in, wait_for_line, wait_until_gone

# A stage that tries every path in options["write"] and records what happened.
WRITE_HOST = '''
def main(tree, options):
    def write(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("escaped\\n")

    write_report(tree, {path: attempt(lambda p=path: write(p)) for path in options["write"]})
'''


def leaks(report: dict[str, Any], secret: str) -> list[str]:
    """The entries of a report (and the files in its "everything") that contain secret."""
    found = [key for key, value in report.items() if key != "everything" and secret in json.dumps(value)]
    return found + [path for path, text in report.get("everything", {}).items() if secret in text]


def report_of(lib: Library, name: str, options: dict[str, Any], store: Path, out: Path) -> dict[str, Any]:
    """Build [name(options)] and return the report the stage left in its tree."""
    tree = lib.build_tree({"stages": [{"name": name, "options": options}]}, store, out)
    report: dict[str, Any] = json.loads((tree / "report.json").read_text())
    return report


def test_host_paths_are_not_writable(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.write-host", WRITE_HOST)
    store = tmp_path / "store"
    token = secrets.token_hex(8)
    targets = {
        "usr": f"/usr/osbuild-escape-{token}",
        "usr-bin": f"/usr/bin/osbuild-escape-{token}",
        "etc": f"/etc/osbuild-escape-{token}",
        "root": f"/root/osbuild-escape-{token}",
        "var-tmp": f"/var/tmp/osbuild-escape-{token}",
        "store": str(store / f"osbuild-escape-{token}"),
        "store-objects": str(store / "objects" / f"osbuild-escape-{token}" / "tree" / "x"),
        "libdir": str(lib.root / "stages" / f"osbuild-escape-{token}"),
        "sys": "/sys/kernel/osbuild-escape",
    }
    try:
        report = report_of(lib, "org.osbuild.test.write-host", {"write": sorted(targets.values())}, store, tmp_path / "out")
        for what, path in targets.items():
            assert not os.path.lexists(path), f"the stage wrote the host's {what}: {path}"
        # The read-only parts of the sandbox refuse the write outright.
        assert report[targets["usr"]]["errno"] == errno.EROFS
        assert report[targets["usr-bin"]]["errno"] == errno.EROFS
        assert not report[targets["sys"]]["ok"]
        assert objects_in(store) == {p.name for p in (store / "objects").iterdir()}
    finally:
        for path in targets.values():
            if os.path.isfile(path):
                os.unlink(path)


READ_HOST = '''
SKIP = ("/usr", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def everything_readable():
    """The text of every file the stage can read outside the host's /usr (which it is meant to see)."""
    found = {}
    for root, dirs, files in os.walk("/"):
        dirs[:] = sorted(d for d in dirs if os.path.join(root, d) not in SKIP)
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    found[path] = f.read(1 << 20).decode(errors="replace")
            except OSError:
                pass
    return found


def main(tree, options):
    def read(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()

    if "wait" in options:
        print("looking", flush=True)
    report = {path: attempt(lambda p=path: read(p)) for path in options["read"]}
    report["listing"] = attempt(lambda: {p: sorted(os.listdir(p)) for p in options.get("list", []) if os.path.isdir(p)})
    report["everything"] = everything_readable()
    write_report(tree, report)
'''


def test_host_secrets_are_not_readable(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.read-host", READ_HOST)
    secret_file = Path("/root") / f".osbuild-test-secret-{secrets.token_hex(4)}"
    secret = secrets.token_hex(16)
    secret_file.write_text(secret + "\n")
    try:
        paths = ["/etc/shadow", "/etc/gshadow", str(secret_file), f"/proc/1/root{secret_file}", "/root/.bash_history"]
        report = report_of(lib, "org.osbuild.test.read-host", {"read": paths}, tmp_path / "store", tmp_path / "out")
    finally:
        secret_file.unlink()
    for path in paths:
        assert not report[path]["ok"], f"the stage read {path}"
        assert report[path]["errno"] == errno.ENOENT
    assert leaks(report, secret) == []
    shadow = Path("/etc/shadow").read_text()
    assert not any(text == shadow for text in report["everything"].values())
    # The sandbox's /etc holds a few harmless files of the build root, and nothing else.
    assert "/etc/passwd" in report["everything"]
    assert not any(path.startswith("/etc/ssh") or "shadow" in path for path in report["everything"])


def test_secrets_inside_shared_etc_entries_are_left_out(lib: Library, tmp_path: Path) -> None:
    """Tools need /etc/ssl and /etc/apt, but not the private keys and credentials kept in them."""
    lib.stage("org.osbuild.test.read-host", READ_HOST)
    secret = secrets.token_hex(16)
    planted = []
    for directory, name in (("/etc/ssl/private", "key.pem"), ("/etc/apt/auth.conf.d", "mirror.conf"),
                            ("/etc/pki/tls/private", "key.pem")):
        if os.path.isdir(directory):
            path = Path(directory) / f"osbuild-test-{secret[:8]}-{name}"
            path.write_text(f"machine mirror login user password {secret}\n")
            path.chmod(0o600)
            planted.append(str(path))
    assert planted, "this host has none of the directories the test plants secrets in"
    try:
        report = report_of(lib, "org.osbuild.test.read-host", {"read": planted, "list": ["/etc/ssl", "/etc/apt"]},
                           tmp_path / "store", tmp_path / "out")
    finally:
        for path in planted:
            os.unlink(path)
    assert leaks(report, secret) == []
    assert all(not report[path]["ok"] for path in planted)
    # What tools need is still there.
    if os.path.isdir("/etc/ssl/certs"):
        assert "certs" in report["listing"]["value"]["/etc/ssl"]
    if os.path.isdir("/etc/apt/sources.list.d"):
        assert "sources.list.d" in report["listing"]["value"]["/etc/apt"]


def test_another_builds_files_are_not_readable(lib: Library, tmp_path: Path) -> None:
    """A finished build's objects and a running build's work are out of a stage's reach, on the same store."""
    lib.stage("org.osbuild.test.read-host", READ_HOST)
    store = tmp_path / "store"
    finished, running = secrets.token_hex(16), secrets.token_hex(16)
    lib.run("--store", str(store), manifest={"stages": [{"name": TEST_STAGE, "options": {"files": {"/secret": finished}}}]})
    slow = lib.popen("--store", str(store), manifest={"stages": [{"name": TEST_STAGE, "options": {
        "files": {"/secret": running}, "say": "secret written", "sleep": 30}}]})
    try:
        wait_for_line(slow, "secret written")
        work = list((store / "tmp").glob("ws-*/stage-*/layer/upper/secret"))
        assert work and work[0].read_text() == running, "the running build keeps its work in the store's tmp/"
        committed = [str(p) for p in (store / "objects").glob("*/tree/secret")]
        paths = [*committed, str(work[0]), f"/proc/1/root{work[0]}"]
        report = report_of(lib, "org.osbuild.test.read-host",
                           {"read": paths, "list": [str(store), str(store / "objects"), str(store / "tmp")]},
                           store, tmp_path / "out")
    finally:
        os.killpg(slow.pid, 9)
        slow.wait()
    assert leaks(report, finished) == []
    assert leaks(report, running) == []
    assert all(not report[p]["ok"] for p in paths)
    # The store itself is not there to list.
    assert report["listing"]["value"] == {}


NETWORK_PROBE = '''
def interfaces():
    with open("/proc/net/dev", encoding="utf-8") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def routes():
    with open("/proc/net/route", encoding="utf-8") as f:
        return [line.split()[:3] for line in f.readlines()[1:]]


def connect(host, port):
    with socket.create_connection((host, port), timeout=5) as s:
        return s.getpeername()[0]


def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)})
    except socket.gaierror as e:
        raise OSError(e.errno, str(e)) from e


def main(tree, options):
    write_report(tree, {
        "interfaces": interfaces(),
        "routes": routes(),
        "resolv.conf": os.path.exists("/etc/resolv.conf"),
        "socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "1.1.1.1:53": attempt(lambda: connect("1.1.1.1", 53)),
        "udp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("1.1.1.1", 53))),
        "resolve": attempt(lambda: resolve("deb.debian.org")),
        "deb.debian.org:80": attempt(lambda: connect("deb.debian.org", 80)) if options.get("connect") else None,
    })
'''


def test_no_network_without_asking(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.net", NETWORK_PROBE)
    report = report_of(lib, "org.osbuild.test.net", {}, tmp_path / "store", tmp_path / "out")
    assert report["interfaces"] == ["lo"]
    assert report["routes"] == []
    assert not report["resolv.conf"]
    assert not report["1.1.1.1:53"]["ok"]
    assert report["1.1.1.1:53"]["errno"] == errno.ENETUNREACH
    assert not report["udp"]["ok"]
    assert not report["resolve"]["ok"]


def host_reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def test_network_when_the_meta_asks(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.net", NETWORK_PROBE, network=True)
    report = report_of(lib, "org.osbuild.test.net", {"connect": True}, tmp_path / "store", tmp_path / "out")
    assert report["socket"]["ok"]
    assert [i for i in report["interfaces"] if i != "lo"], report["interfaces"]
    assert report["routes"], "a stage with network sees the host's routing table"
    assert report["resolv.conf"]
    if host_reaches("deb.debian.org", 80):
        assert report["deb.debian.org:80"]["ok"], report["deb.debian.org:80"]


MOUNT_PROBE = '''
def mount_tmpfs(source, target):
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", source, target], check=True, capture_output=True)
    with open(os.path.join(target, "inside"), "w", encoding="utf-8") as f:
        f.write("x")
    return True


def main(tree, options):
    source = options["source"]
    report = {
        "tree": attempt(lambda: mount_tmpfs(source, os.path.join(tree, "mnt"))),
        "tmp": attempt(lambda: mount_tmpfs(source, "/tmp/mnt")),
        "remount-usr": attempt(lambda: subprocess.run(["mount", "-o", "remount,bind,rw", "/usr"],
                                                      check=True, capture_output=True) and True),
    }
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        report["mounted"] = sum(source in line for line in f)
    with open(os.path.join(tree, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, default=str)
    # Leave every mount behind on purpose: the engine must not leak them.
'''


def mount_report(lib: Library, tmp_path: Path, source: str) -> dict[str, Any]:
    store = tmp_path / "store"
    manifest = {"stages": [{"name": "org.osbuild.test.mount", "options": {"source": source}}]}
    tree = lib.build_tree(manifest, store, tmp_path / "out")
    # The report is in the tree's upper layer, under the mount point the stage left behind.
    report: dict[str, Any] = json.loads((tree / "report.json").read_text())
    assert not (tree / "mnt" / "inside").exists(), "what the stage wrote on its tmpfs landed in the tree"
    return report


def test_mounting_needs_cap_sys_admin(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.mount", MOUNT_PROBE)
    source = f"osbuild-leak-{secrets.token_hex(6)}"
    report = mount_report(lib, tmp_path, source)
    assert not report["tree"]["ok"]
    assert not report["tmp"]["ok"]
    assert not report["remount-usr"]["ok"]
    assert report["mounted"] == 0
    assert mounts_anywhere(source) == []


def test_mounts_of_a_stage_with_cap_sys_admin_do_not_outlive_it(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.mount", MOUNT_PROBE, capabilities=["CAP_SYS_ADMIN"])
    source = f"osbuild-leak-{secrets.token_hex(6)}"
    report = mount_report(lib, tmp_path, source)
    assert report["tree"]["ok"], report
    assert report["tmp"]["ok"], report
    assert report["mounted"] == 2
    assert mounts_mentioning(source) == [], "the stage's mounts are in the host's mount table"
    assert mounts_anywhere(source) == [], "the stage's mounts outlived the build"
    assert mounts_anywhere(str(tmp_path / "store")) == [], "the engine's overlays outlived the build"


PROCESSES_PROBE = '''
def main(tree, options):
    seen = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    seen[entry] = f.read().replace(b"\\0", b" ").decode(errors="replace")
            except OSError:
                pass
    signals = {}
    for pid in options["pids"]:
        signals[pid] = attempt(lambda p=pid: os.kill(p, 0))
    write_report(tree, {"processes": seen, "signal": signals, "pid": os.getpid(), "hostname": socket.gethostname()})
'''


def test_host_processes_are_invisible(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.ps", PROCESSES_PROBE)
    marker = str(900000 + secrets.randbelow(99999))
    host = subprocess.Popen(["sleep", marker])
    try:
        report = report_of(lib, "org.osbuild.test.ps", {"pids": [host.pid, os.getpid()]}, tmp_path / "store", tmp_path / "out")
        assert host.poll() is None, "the stage killed a host process"
    finally:
        host.kill()
        host.wait()
    commands = " | ".join(report["processes"].values())
    assert marker not in commands
    # Only the sandbox's own init (bwrap) and the stage; not the engine, not this test.
    assert "-m pytest" not in commands and "-m osbuild" not in commands
    assert len(report["processes"]) <= 4, report["processes"]
    assert report["pid"] < 10
    assert report["hostname"] == "osbuild"
    # Host pids mean nothing inside: the stage cannot signal them, whatever its capabilities.
    for pid in (str(host.pid), str(os.getpid())):
        result = report["signal"][pid]
        assert not result["ok"] and result["errno"] == errno.ESRCH


KERNEL_PROBE = '''
def open_for_writing(path):
    os.close(os.open(path, os.O_WRONLY))
    return True


def main(tree, options):
    write_report(tree, {
        "sysrq": attempt(lambda: open_for_writing("/proc/sysrq-trigger")),
        "sysctl": attempt(lambda: open_for_writing("/proc/sys/vm/drop_caches")),
        "sys": attempt(lambda: open_for_writing("/sys/kernel/uevent_helper")),
        "mknod": attempt(lambda: os.mknod(os.path.join(tree, "sda"), 0o600 | 0o060000, os.makedev(8, 0))),
        "devices": sorted(os.listdir("/dev")),
    })
'''


def test_kernel_knobs_and_devices_are_out_of_reach(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.kernel", KERNEL_PROBE)
    report = report_of(lib, "org.osbuild.test.kernel", {}, tmp_path / "store", tmp_path / "out")
    for what, path in (("sysrq", "/proc/sysrq-trigger"), ("sysctl", "/proc/sys/vm/drop_caches"),
                       ("sys", "/sys/kernel/uevent_helper")):
        assert not report[what]["ok"], what
        if not os.path.exists(path):
            continue  # this kernel has no such knob
        assert report[what]["errno"] in (errno.EROFS, errno.EACCES, errno.EPERM), report[what]
    assert report["mknod"]["errno"] == errno.EPERM
    assert not [d for d in report["devices"] if d.startswith(("sd", "vd", "nvme", "loop", "dm-", "mem", "kmsg"))]


DAEMON = '''
def main(tree, options):
    # A daemon the stage forgets: its own session, stdout closed, the stage gone before it ends.
    subprocess.Popen(["sleep", options["marker"]], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # And one that keeps the stage's output open.
    subprocess.Popen(["sleep", options["marker"]])
    print("left two sleeps behind", flush=True)
'''


def test_processes_a_stage_leaves_behind_end_with_it(lib: Library, tmp_path: Path) -> None:
    lib.stage("org.osbuild.test.daemon", DAEMON)
    marker = str(800000 + secrets.randbelow(99999))
    proc = lib.run("--store", str(tmp_path / "store"), manifest={"stages": [
        {"name": "org.osbuild.test.daemon", "options": {"marker": marker}}]}, timeout=60)
    assert "left two sleeps behind" in proc.stdout
    assert wait_until_gone(f"sleep {marker}", timeout=5) == []
