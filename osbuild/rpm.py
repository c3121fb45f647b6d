"""RPM handling shared by the RPM stages (dnf, yum, rpm); runs inside the sandbox.

Standard library only, Python 3.9 syntax: it runs under the build root's Python. The
build root's own tools do the work (dnf, rpm, gpg), run as commands, never imported:
their Python bindings belong to the build root's interpreter, not the engine's.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any, Optional

from osbuild.api import StageError, make_parents, system_mounts, tree_path, write_file

# Fedora's place for the rpm database, used when neither the tree nor the build root says otherwise.
FEDORA_DBPATH = "/usr/lib/sysimage/rpm"
# Where a tree or build root keeps the keys that a fingerprint names (fedora-gpg-keys, distribution-gpg-keys).
KEY_DIRS = ("/etc/pki/rpm-gpg", "/usr/share/distribution-gpg-keys")
# What dnf writes that differs from one build to the next; its package and metadata cache goes too.
DNF_LOGS = ("/var/log/dnf.log", "/var/log/dnf.librepo.log", "/var/log/dnf.rpm.log", "/var/log/hawkey.log")
DNF_CACHE = "/var/cache/dnf"
RANDOM_SEED = "/var/lib/systemd/random-seed"
MACHINE_ID = "/etc/machine-id"
# The machine id the original set while dnf runs, so that scriptlets which read one find it.
FAKE_MACHINE_ID = "f" * 32 + "\n"
QUERY_FORMAT = ("%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t"
                "%|RSAHEADER?{%{RSAHEADER:pgpsig}}:{%|DSAHEADER?{%{DSAHEADER:pgpsig}}:{(none)}|}|\\n")
# dnf's lines that say why it failed, most specific first; its final "Error:" line says what failed.
DNF_CAUSES = (
    re.compile(r".* is not signed$"),
    re.compile(r"^Public key for .* is not installed"),
    re.compile(r"^\s*- Curl error .*"),
    re.compile(r"^No match for argument: .*"),
    re.compile(r"^\s*- (nothing provides|conflicting requests|package) .*"),
)
ARMORED_KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
FINGERPRINT = re.compile(r"^(0x)?[0-9A-Fa-f]{40}$|^(0x)?[0-9A-Fa-f]{16}$")


def tree_dbpath(tree: str) -> Optional[str]:
    """The `%_dbpath` the tree's own rpm macros set (the last definition wins), if any."""
    found = None
    names = [*sorted(glob.glob(os.path.join(tree, "usr/lib/rpm/macros*"))),
             *sorted(glob.glob(os.path.join(tree, "usr/lib/rpm/macros.d/macros.*"))),
             *sorted(glob.glob(os.path.join(tree, "etc/rpm/macros*")))]
    for name in names:
        if not os.path.isfile(name):
            continue
        with open(name, encoding="utf-8", errors="replace") as f:
            for line in f:
                match = re.match(r"^%_dbpath\s+(\S+)\s*$", line)
                if match:
                    value = match.group(1).replace("%{_var}", "/var").replace("%{_usr}", "/usr")
                    value = value.replace("%{_prefix}", "/usr")
                    if value.startswith("/") and "%" not in value:
                        found = value
    return found


def dbpath(tree: str) -> str:
    """Where the rpm database of the tree lives: where its macros say, else the build root's rpm's
    place if that is a system path, else Fedora's (Debian's rpm would put it in $HOME)."""
    found = tree_dbpath(tree)
    if found:
        return found
    try:
        value = subprocess.run(["rpm", "--eval", "%_dbpath"], capture_output=True, text=True, check=True,
                               env=dict(os.environ, HOME="/nonexistent")).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        value = ""
    return value if value.startswith(("/usr/", "/var/")) else FEDORA_DBPATH


def rpm_env(home: str, db: str) -> dict[str, str]:
    """An environment whose rpm (and dnf, through it) keeps the database at `db` inside its root.

    The macro is given through a private $HOME's .rpmmacros: dnf has no option for it, and
    the host's (the build root's) macro files must not change.
    """
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".rpmmacros"), "w", encoding="utf-8") as f:
        f.write(f"%_dbpath {db}\n")
    return dict(os.environ, HOME=home, LC_ALL="C.UTF-8")


def installed_packages(tree: str, db: str) -> list[dict[str, Any]]:
    """Every package in the tree's rpm database (name, epoch, version, release, arch, signature),
    sorted; the keys rpm imported (gpg-pubkey) are not packages and are left out."""
    if not os.path.isdir(os.path.join(tree, db.lstrip("/"))):
        return []
    try:
        output = subprocess.run(["rpm", "--root", tree, "--dbpath", db, "-qa", "--qf", QUERY_FORMAT],
                                capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise StageError(f"rpm -qa in the tree: {e.stderr.strip() or e.returncode}") from e
    packages = []
    for line in output.splitlines():
        name, epoch, version, release, arch, signature = line.split("\t")
        if name == "gpg-pubkey":
            continue
        packages.append({"name": name, "epoch": None if epoch == "(none)" else int(epoch), "version": version,
                         "release": release, "arch": arch, "signature": None if signature == "(none)" else signature})
    return sorted(packages, key=lambda p: (p["name"], p["arch"], p["version"], p["release"]))


def key_fingerprints(path: str) -> list[str]:
    """The fingerprints of the public keys in a key file, as gpg reads them."""
    with tempfile.TemporaryDirectory(prefix="osbuild-gpg-") as home:
        proc = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons", "--import-options", "show-only",
                               "--import", path], capture_output=True, text=True, check=False)
    return [line.split(":")[9].upper() for line in proc.stdout.splitlines() if line.startswith("fpr:")]


def find_key(fingerprint: str, trees: list[str]) -> str:
    """The armored key file, in one of the trees' key directories, that holds the key `fingerprint` names
    (all 40 digits, or its last 16, the long key id)."""
    wanted = fingerprint.upper().removeprefix("0X")
    if shutil.which("gpg") is None:
        raise StageError(f"gpgkey {fingerprint}: a key named by fingerprint needs gpg in the build root")
    for root in trees:
        for directory in KEY_DIRS:
            for path in sorted(glob.glob(os.path.join(root, directory.lstrip("/"), "**"), recursive=True)):
                if os.path.isfile(path) and any(f.endswith(wanted) for f in key_fingerprints(path)):
                    return path
    places = " or ".join(KEY_DIRS)
    raise StageError(f"gpgkey {fingerprint}: no key with this fingerprint in {places} of the tree or the build root")


def gpgkey_url(value: str, where: str, keydir: str, tree: str) -> str:
    """What a repository's `gpgkey` gives dnf: an armored key is written to a file, a fingerprint
    is looked up in the tree's and the build root's key directories, a URL is passed on."""
    if value.lstrip().startswith(ARMORED_KEY):
        path = os.path.join(keydir, f"{where}.asc")
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
        return "file://" + path
    if FINGERPRINT.match(value.replace(" ", "")):
        path = find_key(value.replace(" ", ""), [tree, "/"])
        copy = os.path.join(keydir, f"{where}.asc")
        shutil.copyfile(path, copy)
        return "file://" + copy
    if "://" in value:
        return value
    raise StageError(f"{where}: gpgkey is neither an armored key, a fingerprint nor a URL")


def dnf_config(options: dict[str, Any], keydir: str, tree: str) -> str:
    """The text of a dnf.conf with the stage's repositories as repo0, repo1, ... and nothing of the host's."""
    lines = ["[main]", "reposdir=", "plugins=0", "skip_if_unavailable=False",
             # Metadata fetched once is used for the whole stage: the install sees what the checksum verified.
             "metadata_expire=-1"]
    if "module_platform_id" in options:
        lines.append(f"module_platform_id={options['module_platform_id']}")
    for number, repo in enumerate(options["repos"]):
        repoid = f"repo{number}"
        lines += ["", f"[{repoid}]", f"name={repoid}", "gpgcheck=1", "repo_gpgcheck=0"]
        for key in ("metalink", "mirrorlist", "baseurl"):
            if key in repo:
                lines.append(f"{key}={repo[key]}")
        keys = repo.get("gpgkey")
        if keys is not None:
            urls = [gpgkey_url(key, f"{repoid}-key{i}", keydir, tree)
                    for i, key in enumerate(keys if isinstance(keys, list) else [keys])]
            lines.append("gpgkey=" + " ".join(urls))
        for cert in ("sslcacert", "sslclientcert", "sslclientkey"):
            if cert in repo:
                path = os.path.join(keydir, f"{repoid}-{cert}.pem")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(repo[cert])
                lines.append(f"{cert}={path}")
    return "\n".join(lines) + "\n"


def verify_repomd(tree: str, repos: list[dict[str, Any]]) -> None:
    """Each repository's repomd.xml, as dnf downloaded it, has the sha256 its `checksum` gives."""
    for number, repo in enumerate(repos):
        expected = repo.get("checksum")
        if expected is None:
            continue
        found = glob.glob(tree_path(tree, f"{DNF_CACHE}/repo{number}-*/repodata/repomd.xml"))
        if len(found) != 1:
            raise StageError(f"repos[{number}]: dnf left no repomd.xml to verify the checksum against")
        with open(found[0], "rb") as f:
            actual = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        if actual != expected:
            raise StageError(f"repos[{number}]: the repository changed: its repomd.xml has {actual}, "
                             f"the manifest's checksum is {expected}")


def failure_reason(output: str) -> str:
    """The lines of a failed dnf run that say why, joined: the specific cause, then dnf's Error line."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if line.startswith("Error:")), lines[-1] if lines else "")
    for pattern in DNF_CAUSES:
        cause = next((line.strip().removeprefix("- ") for line in reversed(lines) if pattern.match(line)), None)
        if cause is not None and cause not in error:
            return f"{error.removeprefix('Error: ')}: {cause}"
    return error.removeprefix("Error: ")


def run_dnf(argv: list[str], env: dict[str, str], what: str) -> None:
    """Run dnf, showing its output; a failure becomes one line: `what`, then why."""
    print("+ " + " ".join(argv), flush=True)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False)
    except FileNotFoundError as e:
        raise StageError(f"{argv[0]}: not found in the build root") from e
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        raise StageError(f"{what}: {failure_reason(proc.stdout)}")


def clean_tree(tree: str, fake_machine_id: bool) -> None:
    """Leave the tree as the original's dnf stage did: no dnf cache or logs, no random seed,
    and an empty machine-id where the stage had made a fake one."""
    cache = tree_path(tree, DNF_CACHE)
    if os.path.isdir(cache):
        for name in os.listdir(cache):
            path = os.path.join(cache, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    for path in (*DNF_LOGS, RANDOM_SEED):
        target = tree_path(tree, path)
        if os.path.lexists(target):
            os.unlink(target)
    if fake_machine_id:
        write_file(tree, MACHINE_ID, "", mode=0o444)


@contextlib.contextmanager
def installing(tree: str) -> Iterator[None]:
    """The tree as the original's package stages prepared it for scriptlets while the block runs:
    a fake machine-id if it had none, /proc and /dev mounted; cleaned as `clean_tree` says afterwards."""
    fake_machine_id = not os.path.lexists(tree_path(tree, MACHINE_ID))
    if fake_machine_id:
        write_file(tree, MACHINE_ID, FAKE_MACHINE_ID, mode=0o444)
    with system_mounts(tree):
        yield
    clean_tree(tree, fake_machine_id)


def dnf_install(tree: str, options: dict[str, Any], program: str) -> list[dict[str, Any]]:
    """Install the stage's packages into the tree from its repositories with the build root's `program`
    (dnf, or yum with dnf's options); returns the packages it added."""
    db = dbpath(tree)
    before = installed_packages(tree, db)
    with tempfile.TemporaryDirectory(prefix="osbuild-dnf-") as work, installing(tree):
        env = rpm_env(os.path.join(work, "home"), db)
        config = os.path.join(work, "dnf.conf")
        with open(config, "w", encoding="utf-8") as f:
            f.write(dnf_config(options, work, tree))
        base = [program, "-y", "--installroot", tree, "--config", config, "--setopt", "reposdir=", "--noplugins",
                "--releasever", options["releasever"], "--forcearch", options["basearch"],
                "--setopt", f"install_weak_deps={options.get('install_weak_deps', True)}"]
        if "fastestmirror" in options:
            base += ["--setopt", f"fastestmirror={options['fastestmirror']}"]
        if "verbosity" in options:
            base += ["--rpmverbosity", options["verbosity"]]
        for package in options.get("exclude_packages", []):
            base += ["--exclude", package]
        run_dnf([*base, "makecache"], env, f"{program}: reading the repositories")
        verify_repomd(tree, options["repos"])
        operation = options.get("operation", "install")
        run_dnf([*base, operation, *options["packages"]], env, f"{program} {operation}")
    return added_packages(before, installed_packages(tree, db))


def added_packages(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The packages of `after` that `before` does not have, as they are."""
    known = {tuple(sorted(p.items())) for p in before}
    return [p for p in after if tuple(sorted(p.items())) not in known]


# Where kernel-install finds dracut's plugin; masked while rpm runs when dracut is to be skipped.
DRACUT_PLUGIN = "/etc/kernel/install.d/50-dracut.install"


def check_signature(tree: str, db: str, path: str, name: str, env: dict[str, str]) -> None:
    """The package's signature verifies against the keys in the tree's rpm database."""
    proc = subprocess.run(["rpmkeys", "--root", tree, "--dbpath", db, "--checksig", path], capture_output=True,
                          text=True, env=env, check=False)
    report = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "signatures OK" not in report:
        what = report.splitlines()[-1].split(": ", 1)[-1] if report else f"rpmkeys exit status {proc.returncode}"
        raise StageError(f"package {name}: its signature does not verify against the given keys ({what})")


def rpm_install(tree: str, options: dict[str, Any], packages: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """Install .rpm files (path, name to show, whether to check its signature) into the tree, offline, with
    the build root's rpm; the keys of `gpgkeys` go into the tree's database first. Returns what it added."""
    db = options.get("dbpath") or dbpath(tree)
    before = installed_packages(tree, db)
    with tempfile.TemporaryDirectory(prefix="osbuild-rpm-") as work:
        env = rpm_env(os.path.join(work, "home"), db)
        for number, key in enumerate(options.get("gpgkeys", [])):
            path = os.path.join(work, f"key{number}.asc")
            with open(path, "w", encoding="utf-8") as f:
                f.write(key)
            proc = subprocess.run(["rpmkeys", "--root", tree, "--dbpath", db, "--import", path], env=env,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise StageError(f"gpgkeys[{number}]: rpmkeys could not import the key: {proc.stderr.strip()}")
        for path, name, check_gpg in packages:
            if check_gpg:
                check_signature(tree, db, path, name, env)
        argv = ["rpm", "--root", tree, "--dbpath", db, "--install", "--verbose"]
        if options.get("exclude", {}).get("docs"):
            argv.append("--excludedocs")
        dracut = tree_path(tree, DRACUT_PLUGIN)
        mask = options.get("disable_dracut", False) and not os.path.lexists(dracut)
        with installing(tree):
            if mask:
                make_parents(dracut)
                os.symlink("/dev/null", dracut)
            try:
                proc = subprocess.run([*argv, *(path for path, _, _ in packages)], env=env, capture_output=True,
                                      text=True, check=False)
            finally:
                if mask:
                    os.unlink(dracut)
            print(proc.stdout + proc.stderr, end="", flush=True)
            if proc.returncode != 0:
                errors = [line for line in proc.stderr.splitlines() if line.strip()]
                raise StageError(f"rpm --install: {errors[-1].removeprefix('error: ') if errors else proc.returncode}")
    return added_packages(before, installed_packages(tree, db))
