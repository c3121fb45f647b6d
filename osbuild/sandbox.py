"""Run one module in a bubblewrap sandbox. Nothing else in the engine knows bwrap's flags.

The sandbox has its own mount, pid, ipc, uts and (unless the module asks for
network) network namespaces. Its root is an empty tmpfs holding:

    /usr, /bin, ...     the build root's tools, read-only
    /etc                a tmpfs with a few read-only files of the build root's /etc
    /dev /proc /sys     minimal devices, a fresh proc, sysfs read-only
    /tmp /run /var/tmp  empty tmpfs
    /run/osbuild/...    the tree, the api files, the library, the module itself

The host's own /etc never enters a sandbox whole (it holds secrets); only the
entries below, which tools need to run at all.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import osbuild
from osbuild.errors import UserError

# Entries of the build root's /etc that tools need; everything else stays out.
ETC_ENTRIES = (
    "alternatives", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf",
    "mke2fs.conf", "os-release", "login.defs", "shells", "protocols", "services",
    "dpkg", "apt", "rpm", "dnf", "ssl", "ca-certificates", "pki", "xattr.conf",
)
# Paths inside those entries that hold secrets (private keys, repository credentials):
# stages never need them, and with the host as build root they are the host's.
ETC_SECRETS = (
    "ssl/private", "pki/tls/private", "pki/entitlement", "pki/consumer",
    "apt/auth.conf", "apt/auth.conf.d",
)
# The host's name resolution, for the modules that ask for network.
NETWORK_ETC_ENTRIES = ("resolv.conf", "hosts", "gai.conf")
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# What every module may do as root inside its namespaces. Left out unless a
# module's meta asks: mounting (CAP_SYS_ADMIN), device nodes (CAP_MKNOD), and
# the rest of what touches the host kernel (modules, clock, raw I/O, reboot).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE", "CAP_LINUX_IMMUTABLE", "CAP_IPC_LOCK",
)

# Parts of /proc that change the host kernel. bubblewrap covers some of them itself, but
# run as root it leaves /proc/sys writable, and a root process that can write sysctls
# (kernel.core_pattern, to name one) can run anything on the host.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus")

# The engine's modules that code in a sandbox may import (`import osbuild.api`); nothing
# else of the engine enters a sandbox, and ids cover exactly these (library_digest()).
LIBRARY_MODULES = ("__init__.py", "api.py", "debian.py", "fsimage.py", "imageids.py")
SANDBOX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LIB_DIR = "/run/osbuild/lib"
RUNNER_PATH = "/run/osbuild/bin/runner"
PROGRAM_DIR = "/run/osbuild/bin"
OUTPUT_TAIL_LINES = 40


@dataclass(frozen=True)
class Bind:
    """A host path made visible at `target` inside the sandbox."""

    source: str
    target: str
    readonly: bool = True
    device: bool = False            # a device node the module may open (format 2's devices)


@dataclass
class SandboxConfig:
    """Everything one sandboxed run needs."""

    root: str                       # the build root: "/" for the host
    runner: str                     # host path of the runner program
    program: str                    # host path of the module's program
    binds: Sequence[Bind] = ()
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False
    capabilities: Sequence[str] = ()


@dataclass
class SandboxResult:
    returncode: int
    tail: list[str]


def library_dir() -> str:
    """The engine's own `osbuild` package directory."""
    return os.path.dirname(os.path.abspath(osbuild.__file__))


def library_digest() -> str:
    """sha256 over the library modules a sandbox sees, by name and content."""
    digest = hashlib.sha256()
    for name in LIBRARY_MODULES:
        with open(os.path.join(library_dir(), name), "rb") as f:
            data = f.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def host_runner_name(available: Sequence[str]) -> str:
    """The runner for the host as build root: org.osbuild.IDVERSION from os-release, if there is one."""
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    fields[key] = value.strip('"')
    except OSError:
        pass
    candidate = "org.osbuild." + fields.get("ID", "") + fields.get("VERSION_ID", "").split(".")[0]
    return candidate if candidate in available else "org.osbuild.linux"


def check_build_root(root: str, description: str) -> None:
    """Fail early, in words, when a build root cannot run our Python runners."""
    if not os.path.exists(os.path.join(root, "usr/bin/python3")):
        raise UserError(f"{description} has no /usr/bin/python3, which runners and stages need: add python3 to it")


def command(config: SandboxConfig) -> list[str]:
    """The bwrap command line for a sandboxed run."""
    root = config.root.rstrip("/") or ""
    argv = [
        "bwrap",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--hostname", "osbuild",
        "--cap-drop", "ALL",
    ]
    for cap in sorted(set(DEFAULT_CAPABILITIES) | set(config.capabilities)):
        argv += ["--cap-add", cap]
    if not config.network:
        argv.append("--unshare-net")
    argv += ["--ro-bind", f"{root}/usr", "/usr"]
    for name in TOP_LEVEL_LINKS:
        path = f"{root}/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), f"/{name}"]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, f"/{name}"]
    argv += ["--dir", "/etc"]
    for name in ETC_ENTRIES:
        argv += _etc_binds(root, name)
    if config.network:
        for name in NETWORK_ETC_ENTRIES:
            if os.path.exists(f"/etc/{name}"):
                argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    for name in PROC_READONLY:
        if os.path.exists(f"/proc/{name}"):
            argv += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    argv += [
        "--ro-bind", "/sys", "/sys",
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--dir", "/var/tmp", "--dir", "/root",
    ]
    library = library_dir()
    for name in LIBRARY_MODULES:
        argv += ["--ro-bind", os.path.join(library, name), f"{LIB_DIR}/osbuild/{name}"]
    argv += [
        "--ro-bind", config.runner, RUNNER_PATH,
        "--ro-bind", config.program, program_path(config.program),
    ]
    for b in config.binds:
        argv += ["--dev-bind" if b.device else "--ro-bind" if b.readonly else "--bind", b.source, b.target]
    env = {
        "PATH": SANDBOX_PATH,
        "PYTHONPATH": LIB_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    env.update(config.env)
    argv.append("--clearenv")
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    argv += ["--chdir", "/", "--", RUNNER_PATH, program_path(config.program)]
    return argv


def _etc_binds(root: str, name: str) -> list[str]:
    """Bind the build root's /etc/NAME read-only, leaving out the secrets in ETC_SECRETS.

    A directory that holds a secret is made in the sandbox and its other entries are
    bound one by one, so the secret does not exist there at all.
    """
    source = f"{root}/etc/{name}"
    if not os.path.exists(source):
        return []
    inside = [secret for secret in ETC_SECRETS if secret.startswith(name + "/")]
    if not inside or os.path.islink(source) or not os.path.isdir(source):
        return ["--ro-bind", source, f"/etc/{name}"]
    argv = ["--dir", f"/etc/{name}"]
    for entry in sorted(os.listdir(source)):
        if f"{name}/{entry}" not in ETC_SECRETS:
            argv += _etc_binds(root, f"{name}/{entry}")
    return argv


def program_path(host_path: str) -> str:
    """Where a module's program appears inside the sandbox."""
    return f"{PROGRAM_DIR}/{os.path.basename(host_path)}"


def run(config: SandboxConfig, stdin: bytes, on_output: Callable[[str], None]) -> SandboxResult:
    """Run the module; stream each line of its output (stdout and stderr) to on_output.

    If this process is interrupted, the sandbox is killed before the exception
    leaves this function.
    """
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    proc = subprocess.Popen(command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=False)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        def on_line(line: str) -> None:
            tail.append(line)
            on_output(line)

        _stream(proc.stdout, on_line)
        returncode = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    return SandboxResult(returncode, list(tail))


def _stream(stream: object, on_line: Callable[[str], object]) -> None:
    """Split a byte stream into lines as they arrive (partial lines flush at the end)."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            selector.select()
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", errors="replace"))
    if pending:
        on_line(pending.decode("utf-8", errors="replace"))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
