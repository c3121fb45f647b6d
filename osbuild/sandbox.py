"""Run one module in a bubblewrap sandbox. Nothing else in the engine knows bwrap's flags
or how the sandbox's user namespace is made.

Every module runs as root of a user namespace whose ids map to a range of host ids
that owns nothing on the host (`Identity`): it holds every capability there and none
on the host. Files it writes land on disk with their real owners because the trees
and directories it may write are idmapped mounts. Every read-only bind is made by the
engine before the sandbox's namespaces exist, so the kernel locks it read-only.

The sandbox has its own mount, pid, ipc, uts and (unless the module asks for
network) network namespaces. Its root is an empty tmpfs holding:

    /usr, /bin, ...     the build root's tools, read-only
    /etc                a few read-only files of the build root's /etc on a tmpfs, or, for a
                        runner that asks (`writable_etc`), throwaway copies of them
    /dev /proc /sys     minimal devices, a fresh proc, sysfs read-only
    /tmp /run /var/tmp  empty tmpfs
    /run/osbuild/...    the tree, the api files, the library, the module itself

The host's own /etc never enters a sandbox whole (it holds secrets); only the
entries below, which tools need to run at all.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import selectors
import signal
import stat
import subprocess
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import osbuild
from osbuild import api, mounts
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
# At most this many bytes of /etc entries are copied for a runner that writes /etc: they are
# small config files, and the copies live in memory for the run.
ETC_COPY_LIMIT = 64 * 1024 * 1024
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
LIBRARY_MODULES = ("__init__.py", "api.py", "archive.py", "debian.py", "fsimage.py", "grubimage.py", "imageids.py", "rpm.py")
SANDBOX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LIB_DIR = "/run/osbuild/lib"
RUNNER_PATH = "/run/osbuild/bin/runner"
PROGRAM_DIR = "/run/osbuild/bin"
OUTPUT_TAIL_LINES = 40


# The host ids the sandbox's ids 0..ID_COUNT-1 map to. No host file is owned by them:
# above the ranges distributions give users, containers (systemd's end below 0x70000000)
# and /etc/subuid; Identity.create() refuses a range /etc/subuid or /etc/subgid hands out.
ID_BASE = 0x70000000
ID_COUNT = 65536
# The id on disk of files the engine itself (host root) creates through an idmapped
# mount: the overlay's whiteouts and work directory. Commits give whiteouts back to 0.
ENGINE_DISK_ID = ID_COUNT

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
SYS_PIVOT_ROOT = 155  # x86_64
MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


@dataclass(frozen=True)
class Bind:
    """A host path made visible at `target` inside the sandbox.

    An idmapped bind shows the sandbox its files with their owners on disk (0 is the
    sandbox's root), so it can read and, unless read-only, write them; a plain bind
    shows host-owned files as owned by nobody.
    """

    source: str
    target: str
    readonly: bool = True
    idmapped: bool = False
    device: bool = False            # a device node the module may open (format 2's devices)


def _user_namespace(uid_map: str) -> int:
    """A new user namespace with this uid and gid map; a file descriptor that keeps it alive."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only makes the namespace and waits until it is kept by a descriptor
        try:
            os.close(ready_r)
            os.close(done_w)
            status = 0 if _libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno() or errno.EPERM
            os.write(ready_w, b"%d" % status)
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        status = int(os.read(ready_r, 8) or b"1")
        if status == errno.EPERM:
            raise UserError("cannot create a user namespace for the sandbox: the kernel refuses it to this process "
                            "(a chroot may not make one: enter the root with pivot_root, as systemd-nspawn and "
                            "container runtimes do; or a security policy forbids user namespaces)")
        if status:
            raise UserError("cannot create a user namespace for the sandbox: user namespaces are disabled on this host "
                            f"(sysctl user.max_user_namespaces): {os.strerror(status)}")
        with open(f"/proc/{pid}/uid_map", "w", encoding="ascii") as f:
            f.write(uid_map)
        with open(f"/proc/{pid}/setgroups", "w", encoding="ascii") as f:
            f.write("deny")
        with open(f"/proc/{pid}/gid_map", "w", encoding="ascii") as f:
            f.write(uid_map)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def _subordinate_lines(path: str) -> list[tuple[str, int, int, str]]:
    """The entries of /etc/subuid or /etc/subgid: (user, first id, count, the line); none if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            entries.append((fields[0], int(fields[1]), int(fields[2]), line))
    return entries


def _subordinate_overlap(path: str, base: int, count: int) -> str | None:
    """The first line of /etc/subuid or /etc/subgid whose range meets [base, base+count)."""
    for _, start, length, line in _subordinate_lines(path):
        if start < base + count and base < start + length:
            return line
    return None


ROOTLESS_ENV = "OSBUILD_ROOTLESS"


def rootless() -> bool:
    """True in an engine that an ordinary user started (it runs in the user's namespace, see run_rootless)."""
    return os.environ.get(ROOTLESS_ENV) == "1"


def _subordinate_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """The first range of at least ID_COUNT ids that /etc/subuid or /etc/subgid gives the user."""
    for name, start, length, _ in _subordinate_lines(path):
        if name in (user, str(uid)) and length >= ID_COUNT:
            return start, length
    return None


def run_rootless(argv: Sequence[str]) -> None:
    """Start the engine again as root of a user namespace of the calling user; never returns.

    The namespace maps its root to the user and its ids 1..ID_COUNT to the user's
    subordinate ids, so the store belongs to the user and trees hold their files with
    the subordinate ids on disk. Modules then run one namespace further in (Identity):
    their root is the namespace's id 1, and the user's own files are out of their reach.
    """
    import pwd  # noqa: PLC0415 (only here: modules in a sandbox import this file's constants)
    import shutil  # noqa: PLC0415

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    ranges = [_subordinate_range(path, user, uid) for path in ("/etc/subuid", "/etc/subgid")]
    if ranges[0] is None or ranges[1] is None:
        raise UserError(f"osbuild without root needs {ID_COUNT} subordinate ids for user {user} in /etc/subuid and "
                        f"/etc/subgid; as root: usermod --add-subuids 200000-{200000 + ID_COUNT - 1} "
                        f"--add-subgids 200000-{200000 + ID_COUNT - 1} {user}")
    for tool in ("newuidmap", "newgidmap", "unshare"):
        if shutil.which(tool) is None:
            raise UserError(f"osbuild without root needs {tool}: as root, apt-get install uidmap util-linux")
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise UserError("osbuild without root needs user namespaces, which this host does not allow an ordinary user "
                        "(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)")
    (suid, _), (sgid, _) = ranges[0], ranges[1]
    os.environ[ROOTLESS_ENV] = "1"
    os.execvp("unshare", ["unshare", "--user", "--map-root-user", f"--map-users={suid},1,{ID_COUNT}",
                          f"--map-groups={sgid},1,{ID_COUNT}", "--mount", "--", *argv])


@dataclass
class Identity:
    """Who a build's modules are: root of a user namespace mapped to host ids that own nothing.

    `process_ns` is the namespace modules run in (ids 0..ID_COUNT-1 -> ID_BASE...).
    `mount_ns` is the id mapping of idmapped mounts: the same, plus host root as disk
    id ENGINE_DISK_ID, so that the engine (which mounts overlays) can write there too.
    A module can never become host root: that id is not in its namespace.
    """

    process_ns: int
    mount_ns: int | None             # None without root: no idmapped mounts then
    # The module's root as the engine sees it: 0 as root (through idmapped mounts), 1 without root.
    module_root: int = 0

    @property
    def rootless(self) -> bool:
        return self.mount_ns is None

    @classmethod
    def create(cls) -> Identity:
        if rootless():
            # Without root there are no idmapped mounts: modules run one namespace in, their
            # root is this namespace's id 1, and files keep on disk the subordinate ids they map to.
            return cls(_user_namespace(f"0 1 {ID_COUNT}\n"), None, module_root=1)
        for path in ("/etc/subuid", "/etc/subgid"):
            line = _subordinate_overlap(path, ID_BASE, ID_COUNT + 1)
            if line is not None:
                raise UserError(f"{path} gives {line!r} ids that the sandbox maps its own ids to "
                                f"({ID_BASE}..{ID_BASE + ID_COUNT}): move that range")
        process_ns = _user_namespace(f"0 {ID_BASE} {ID_COUNT}\n")
        mount_ns = _user_namespace(f"0 {ID_BASE} {ID_COUNT}\n{ENGINE_DISK_ID} 0 1\n")
        return cls(process_ns, mount_ns)

    def close(self) -> None:
        os.close(self.process_ns)
        if self.mount_ns is not None:
            os.close(self.mount_ns)

    def enter(self, root: str, network: bool) -> None:
        """In a child process before exec: take root as / and become root of the sandbox's user namespace.

        The host's groups go; root (a staged root, see _staged_root) lets bubblewrap reach
        what it binds without walking host directories the namespace cannot enter. Without
        network the process gets a network namespace of its own first, owned by the host's
        user namespace: the sandbox's root holds no capability over it, so it cannot mount
        a sysfs (which shows the host's devices) or configure it.
        """
        # A mount namespace whose root is the staged root: nothing of the host's tree is
        # above it, so a chroot escape inside the sandbox has nowhere to climb to.
        if _libc.unshare(CLONE_NEWNS) != 0:
            os._exit(126)
        os.chdir(root)
        if _libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), b".", b".") != 0 or _libc.umount2(b".", MNT_DETACH) != 0:
            os._exit(126)
        os.chroot(".")
        os.chdir("/")
        if not network and _libc.unshare(CLONE_NEWNET) != 0:
            os._exit(126)
        os.setgroups([])
        if _libc.setns(self.process_ns, CLONE_NEWUSER) != 0:
            os._exit(126)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)

    def idmap(self, source: str, target: str, readonly: bool) -> None:
        """Mount source on target so that a module sees (and writes) its files with their owners on disk.

        Without root the ids are already the module's (shifted on disk); a directory or
        file the engine made for a module to write is given to the module's root.
        """
        if self.mount_ns is not None:
            mounts.idmapped_bind(source, target, self.mount_ns, readonly)
        elif readonly:
            mounts.readonly_bind(source, target)
        else:
            os.chown(source, self.module_root, self.module_root)
            mounts.bind(source, target)

    def device_node(self, device: str, directory: str) -> str:
        """A node of the host's device in directory that the module's root may open; its path.

        The host's own node belongs to the host's root, whom a module is not: the engine
        makes a private one, owned by the module's root, for as long as the stage runs.
        """
        st = os.stat(device)
        node = os.path.join(directory, "device-" + os.path.basename(device))
        os.mknod(node, (st.st_mode & 0o170000) | 0o600, st.st_rdev)
        os.chown(node, self.module_owner, self.module_owner)
        return node

    @property
    def module_owner(self) -> int:
        """The engine's id for the module's root, for a file the engine makes and gives it outright."""
        return ID_BASE if self.mount_ns is not None else self.module_root

    def own(self, path: str) -> None:
        """Give a directory the engine made (an empty tree's root) to the module's root."""
        if self.module_root:
            os.chown(path, self.module_root, self.module_root)


@dataclass
class SandboxConfig:
    """Everything one sandboxed run needs."""

    root: str                       # the build root: "/" for the host
    runner: str                     # host path of the runner program
    program: str                    # host path of the module's program
    identity: Identity              # the user namespace the module runs in
    staging: str                    # an empty host directory for the binds the engine makes
    binds: Sequence[Bind] = ()
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False
    capabilities: Sequence[str] = ()
    # The runner's meta asks for it: /etc is a writable copy, thrown away with the run (_copy_etc).
    writable_etc: bool = False


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


def resolve_in_root(root: str, path: str) -> str | None:
    """The host path of `path` inside the tree `root`, its symlinks followed as if root were /.

    A build root is a tree that earlier stages wrote: an absolute symlink in it names a
    path in that tree, never the host's (its /etc/passwd -> /etc/shadow must not bind the
    host's shadow). None when it does not exist or loops.
    """
    try:
        resolved = api.resolve_in(root.rstrip("/") or "/", path)
    except OSError:
        return None
    return resolved if os.path.lexists(resolved) else None


class _Plan:
    """The bwrap arguments of one run, and the binds the engine makes for it beforehand."""

    def __init__(self, staging: str) -> None:
        self.staging = staging
        self.argv: list[str] = []
        self.binds: list[tuple[Bind, str]] = []     # what to mount, where in staging

    def bind(self, bind: Bind) -> None:
        """Show a host path in the sandbox, through a mount the engine makes (so its flags are locked)."""
        name = f"b{len(self.binds)}"
        self.binds.append((bind, os.path.join(self.staging, name)))
        self.argv += ["--dev-bind" if bind.device else "--bind", "/" + name, bind.target]

    def ro(self, source: str, target: str) -> None:
        self.bind(Bind(source, target))

    def ro_in(self, root: str, path: str, target: str) -> None:
        """Bind a path of the build root read-only, if it exists there."""
        resolved = resolve_in_root(root, path)
        if resolved is not None:
            self.ro(resolved, target)


def command(config: SandboxConfig) -> tuple[list[str], list[tuple[Bind, str]]]:
    """The bwrap command line for a sandboxed run, and the host-side binds it expects in config.staging."""
    root = config.root.rstrip("/") or ""
    plan = _Plan(config.staging)
    plan.argv = [
        "bwrap",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--hostname", "osbuild",
        "--cap-drop", "ALL",
    ]
    for cap in sorted(set(DEFAULT_CAPABILITIES) | set(config.capabilities)):
        plan.argv += ["--cap-add", cap]
    plan.ro_in(root, "/usr", "/usr")
    for name in TOP_LEVEL_LINKS:
        path = f"{root}/{name}"
        if os.path.islink(path):
            plan.argv += ["--symlink", os.readlink(path), f"/{name}"]
        elif os.path.isdir(path):
            plan.ro_in(root, f"/{name}", f"/{name}")
    if config.writable_etc:
        plan.argv += ["--bind", "/" + ETC_COPY, "/etc"]  # the staged root's copy, see _copy_etc
    else:
        plan.argv += ["--dir", "/etc"]
        for name in ETC_ENTRIES:
            _etc_binds(plan, root, name)
    if config.network:
        for name in NETWORK_ETC_ENTRIES:
            if os.path.exists(f"/etc/{name}"):
                plan.ro(f"/etc/{name}", f"/etc/{name}")
    plan.argv += ["--dev", "/dev", "--proc", "/proc"]
    for name in PROC_READONLY:
        if os.path.exists(f"/proc/{name}"):
            plan.argv += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]  # the sandbox's own proc
    plan.ro("/sys", "/sys")
    plan.argv += ["--tmpfs", "/tmp", "--tmpfs", "/run", "--dir", "/var/tmp", "--dir", "/root"]
    library = library_dir()
    for name in LIBRARY_MODULES:
        plan.ro(os.path.join(library, name), f"{LIB_DIR}/osbuild/{name}")
    plan.ro(config.runner, RUNNER_PATH)
    plan.ro(config.program, program_path(config.program))
    for b in config.binds:
        plan.bind(b)
    env = {
        "PATH": SANDBOX_PATH,
        "PYTHONPATH": LIB_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    env.update(config.env)
    plan.argv.append("--clearenv")
    for key, value in sorted(env.items()):
        plan.argv += ["--setenv", key, value]
    plan.argv += ["--chdir", "/", "--", RUNNER_PATH, program_path(config.program)]
    return plan.argv, plan.binds


def _etc_binds(plan: _Plan, root: str, name: str) -> None:
    """Bind the build root's /etc/NAME read-only, leaving out the secrets in ETC_SECRETS.

    A directory that holds a secret is made in the sandbox and its other entries are
    bound one by one, so the secret does not exist there at all.
    """
    source = resolve_in_root(root, f"/etc/{name}")
    if source is None:
        return
    inside = [secret for secret in ETC_SECRETS if secret.startswith(name + "/")]
    if not inside or not os.path.isdir(source):
        plan.ro(source, f"/etc/{name}")
        return
    plan.argv += ["--dir", f"/etc/{name}"]
    for entry in sorted(os.listdir(source)):
        if f"{name}/{entry}" not in ETC_SECRETS:
            _etc_binds(plan, root, f"{name}/{entry}")


# Where in the staged root the copy of /etc is, for a runner that writes /etc.
ETC_COPY = "etc"


def _copy_etc(root: str, target: str, owner: int) -> None:
    """Copy the build root's ETC_ENTRIES (minus ETC_SECRETS) into the new directory target, for one run.

    The copies belong to the module's root (owner), so it can change and replace them
    (systemd-sysusers renames a new passwd over the old one); they live on the run's
    staged tmpfs and go with it, so neither the build root nor the host ever changes.
    An entry is found as a bind would be (its symlinks followed inside root); below it,
    symlinks are copied as symlinks and nothing but directories, files and symlinks is
    copied, so the engine never opens a path a build root's symlink chose.
    """
    os.mkdir(target, 0o755)
    os.chown(target, owner, owner)
    budget = [ETC_COPY_LIMIT]
    for name in ETC_ENTRIES:
        source = resolve_in_root(root, f"/etc/{name}")
        if source is not None:
            _copy_etc_entry(source, name, target, owner, budget)


def _copy_etc_entry(source: str, name: str, target: str, owner: int, budget: list[int]) -> None:
    if name in ETC_SECRETS:
        return
    dest = os.path.join(target, name)
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), dest)
    elif stat.S_ISDIR(st.st_mode):
        try:
            entries = sorted(os.listdir(source))
        except PermissionError:
            return  # what the module could not read through a bind either
        os.mkdir(dest)
        for entry in entries:
            _copy_etc_entry(os.path.join(source, entry), f"{name}/{entry}", target, owner, budget)
    elif stat.S_ISREG(st.st_mode):
        budget[0] -= st.st_size
        if budget[0] < 0:
            raise UserError(f"the build root's /etc entries hold more than {ETC_COPY_LIMIT // 2**20} MiB "
                            f"(at /etc/{name}): too much to copy for a runner that writes /etc")
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            return
        with open(fd, "rb") as src, open(dest, "xb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    else:
        return  # devices, fifos and sockets are no configuration
    os.lchown(dest, owner, owner)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, st.st_mode & 0o777)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# What bubblewrap itself needs in the staged root to start: the host's tools, its /proc,
# and the device nodes it binds into the sandbox's /dev.
STAGED_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@contextmanager
def _staged_root(staging: str, identity: Identity, binds: Sequence[tuple[Bind, str]],
                 etc_from: str | None = None) -> Iterator[None]:
    """Make the root bubblewrap starts in: a tmpfs on staging with the host's /usr and /proc, and every bind.

    With etc_from (a build root), also the copy of its /etc for a runner that writes /etc.

    bubblewrap runs as the namespace's root, which may not walk the host directories
    above a store; started in this root it finds each bind at /bN. Every mount here
    is the engine's, made before the sandbox's namespaces: the kernel locks their flags.
    """
    mounts.mount_tmpfs(staging)
    try:
        os.mkdir(os.path.join(staging, "usr"))
        mounts.readonly_bind("/usr", os.path.join(staging, "usr"))
        for name in TOP_LEVEL_LINKS:
            if os.path.islink(f"/{name}"):
                os.symlink(os.readlink(f"/{name}"), os.path.join(staging, name))
            elif os.path.isdir(f"/{name}"):
                os.mkdir(os.path.join(staging, name))
                mounts.readonly_bind(f"/{name}", os.path.join(staging, name))
        # Writable as the host's is: the kernel lets bubblewrap mount a proc only where one no
        # more restricted is visible. bubblewrap detaches the staged root before the module runs.
        os.mkdir(os.path.join(staging, "proc"))
        mounts.bind("/proc", os.path.join(staging, "proc"))
        os.mkdir(os.path.join(staging, "tmp"))
        os.mkdir(os.path.join(staging, "dev"))
        for name in STAGED_DEVICES:
            node = os.path.join(staging, "dev", name)
            open(node, "w").close()
            mounts.bind(f"/dev/{name}", node)
        for bind, staged in binds:
            if os.path.isdir(bind.source):
                os.mkdir(staged)
            else:
                open(staged, "w").close()
            if bind.idmapped:
                identity.idmap(bind.source, staged, bind.readonly)
            elif bind.device:
                mounts.bind(bind.source, staged)  # keeps the node's own mount, which allows devices
            elif bind.readonly:
                mounts.readonly_bind(bind.source, staged)
            else:
                mounts.bind(bind.source, staged)
        if etc_from is not None:
            _copy_etc(etc_from, os.path.join(staging, ETC_COPY), identity.module_owner)
        yield
    finally:
        mounts.umount(staging)  # detaches everything under it too


def program_path(host_path: str) -> str:
    """Where a module's program appears inside the sandbox."""
    return f"{PROGRAM_DIR}/{os.path.basename(host_path)}"


def run(config: SandboxConfig, stdin: bytes, on_output: Callable[[str], None]) -> SandboxResult:
    """Run the module; stream each line of its output (stdout and stderr) to on_output.

    If this process is interrupted, the sandbox is killed before the exception
    leaves this function.
    """
    argv, binds = command(config)
    etc_from = config.root if config.writable_etc else None
    with _staged_root(config.staging, config.identity, binds, etc_from):
        return _run(argv, functools.partial(config.identity.enter, config.staging, config.network), stdin, on_output)


def _run(argv: list[str], enter: Callable[[], None], stdin: bytes, on_output: Callable[[str], None]) -> SandboxResult:
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    # enter takes no locks: chroot, setgroups, setns and setresuid are one system call each.
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=False, preexec_fn=enter)  # noqa: PLW1509
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
