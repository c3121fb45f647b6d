"""tools/osbuild-boot-test: arguments, image formats, reading a recorded console, and a boot that fails."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
TOOL = REPO / "tools" / "osbuild-boot-test"
# The serial console of a Debian bookworm image (org.osbuild.test in it) booted by this tool under TCG.
RECORDED = Path(__file__).resolve().parent / "data" / "bookworm-boot-console.log"


def load_tool() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("osbuild_boot_test", str(TOOL))
    spec = importlib.util.spec_from_loader("osbuild_boot_test", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["osbuild_boot_test"] = module
    loader.exec_module(module)
    return module


bt = load_tool()


def run_tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


# -- arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    ([], "the following arguments are required: IMAGE"),
    (["/nonexistent/disk.qcow2"], "/nonexistent/disk.qcow2: no such file"),
    (["/"], "/: is a directory, not a disk image"),
    (["IMAGE", "--timeout", "soon"], "argument --timeout: 'soon' is not a number"),
    (["IMAGE", "--timeout", "-5"], "argument --timeout: '-5' must be greater than 0"),
    (["IMAGE", "--memory", "0"], "argument --memory: '0' must be greater than 0"),
    (["IMAGE", "--log", "/"], "--log /: is a directory"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\0" * 4096)
    proc = run_tool(*[str(image) if a == "IMAGE" else a for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "options"), [
    ("qcow2", []), ("vmdk", []), ("vmdk", ["-o", "subformat=streamOptimized"]), ("vmdk", ["-o", "subformat=monolithicFlat"]),
    ("vpc", []), ("vpc", ["-o", "subformat=fixed"]), ("vhdx", []), ("vdi", []), ("raw", []),
])
def test_format_is_read_from_the_image(tmp_path, fmt, options):
    image = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(image), "64M"], check=True)
    assert bt.detect_format(str(image)) == fmt


def test_a_raw_disk_with_a_partition_table_is_raw(tmp_path):
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "--quiet", str(image)], input="label: dos\nstart=2048, type=83\n", text=True, check=True)
    assert bt.detect_format(str(image)) == "raw"


def test_qemu_opens_the_image_as_a_snapshot_in_its_format():
    argv = bt.qemu_command("/images/a,b.qcow2", "qcow2", "/tmp/console.log", 2048, ["-accel", "tcg,thread=multi"])
    assert argv[argv.index("-drive") + 1] == "file=/images/a,,b.qcow2,if=virtio,format=qcow2,snapshot=on"
    assert argv[argv.index("-serial") + 1] == "file:/tmp/console.log"
    assert argv[argv.index("-m") + 1] == "2048"


def test_kvm_only_when_it_exists_and_is_not_pvm(tmp_path):
    kvm, pvm = tmp_path / "kvm", tmp_path / "kvm_pvm"
    assert bt.accelerator(str(kvm), str(pvm)) == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    kvm.touch()
    assert bt.accelerator(str(kvm), str(pvm)) == ["-accel", "kvm", "-cpu", "host"]
    pvm.mkdir()
    assert bt.accelerator(str(kvm), str(pvm)) == ["-accel", "tcg,thread=multi", "-cpu", "max"]


# -- the console ---------------------------------------------------------------------------


def recorded() -> str:
    return RECORDED.read_bytes().decode("utf-8", errors="replace")


def test_recorded_boot_reaches_login_and_reports_running():
    console = bt.read_console(recorded())
    assert console.login
    assert (console.state, console.failed, console.done) == ("running", [], True)
    assert bt.verdict(console, login_only=False, allow_degraded=False, timed_out=None, qemu_status=None) == (
        0, "PASS: login prompt, system running")


def test_recorded_boot_cut_before_the_report_is_not_finished():
    text = recorded()
    cut = text[:text.index("osbuild-boot-test: running")]
    console = bt.read_console(cut)
    assert console.login and console.state is None and not console.done
    assert not bt.finished(console, login_only=False)
    assert bt.finished(console, login_only=True)
    assert bt.verdict(console, login_only=True, allow_degraded=False, timed_out=None, qemu_status=None) == (
        0, "PASS: login prompt on the console")
    status, reason = bt.verdict(console, login_only=False, allow_degraded=False, timed_out=300, qemu_status=None)
    assert status == 1
    assert reason.startswith("FAIL: timeout after 300 s, no osbuild-boot-test report")
    assert "last console line: '" in reason and "debian-osbuild login:" in reason


def test_recorded_boot_cut_before_login_says_what_was_last_seen():
    text = recorded()
    console = bt.read_console(text[:text.index("Debian GNU/Linux 12 debian-osbuild ttyS0")])
    assert not console.login
    status, reason = bt.verdict(console, login_only=False, allow_degraded=True, timed_out=None, qemu_status=0)
    assert status == 1
    assert reason == ("FAIL: qemu exited with status 0, no login prompt; last console line: "
                      "'[   48.756494] bochs-drm 0000:00:02.0: [drm] fb0: bochs-drmdrmfb frame buffer device'")


def degraded_log() -> str:
    """The recorded boot with the report the stage's script writes for a degraded system."""
    text = recorded()
    report = ("[   49.751525] osbuild-boot-report[235]: osbuild-boot-test: degraded\r\n"
              "[   49.801001] osbuild-boot-report[235]: osbuild-boot-test: failed systemd-remount-fs.service\r\n"
              "osbuild-boot-test: failed systemd-remount-fs.service\r\n"
              "[   49.802002] osbuild-boot-report[235]: osbuild-boot-test: failed ssh.service\r\n"
              "[   50.326988] osbuild-boot-report[235]: osbuild-boot-test: done\r\n")
    start = text.index("[   49.751525]")
    end = text.index("\n", text.index("osbuild-boot-test: done")) + 1
    return text[:start] + report + text[end:]


def test_degraded_boot_names_the_failed_units_and_passes_only_when_allowed():
    console = bt.read_console(degraded_log())
    assert (console.state, console.failed, console.done) == ("degraded", ["systemd-remount-fs.service", "ssh.service"], True)
    strict = bt.verdict(console, login_only=False, allow_degraded=False, timed_out=None, qemu_status=None)
    assert strict == (1, "FAIL: system degraded (failed units: systemd-remount-fs.service, ssh.service)")
    allowed = bt.verdict(console, login_only=False, allow_degraded=True, timed_out=None, qemu_status=None)
    assert allowed == (0, "PASS: login prompt, system degraded (failed units: systemd-remount-fs.service, ssh.service)")


def test_unit_descriptions_that_mention_the_marker_are_not_a_report():
    console = bt.read_console(
        "         Starting \x1b[0;1;39mosbuild-boot-repo…the console (osbuild-boot-test)...\r\n"
        "[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mosbuild-boot-repor…n the console (osbuild-boot-test).\r\n")
    assert (console.state, console.done, console.login) == (None, False, False)


# -- a real qemu run ---------------------------------------------------------------------


def test_a_disk_that_does_not_boot_times_out_and_stays_unchanged(tmp_path):
    image = tmp_path / "blank.raw"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    log = tmp_path / "console.log"
    proc = run_tool(str(image), "--timeout", "3", "--log", str(log))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == (f"osbuild-boot-test: FAIL: timeout after 3 s, no login prompt; the console stayed empty "
                           f"(console log: {log})\n")
    assert log.exists()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert not subprocess.run(["pgrep", "-f", f"file={image}"], capture_output=True, check=False).stdout


def test_login_needs_user_and_password():
    assert bt.credentials("root:osbuild") == ("root", "osbuild")
    assert bt.credentials("root:") == ("root", "")
    for bad in ("root", ":pw"):
        with pytest.raises(bt.argparse.ArgumentTypeError):
            bt.credentials(bad)


def test_a_login_makes_the_serial_line_a_socket_logged_to_the_file():
    argv = bt.qemu_command("/i.qcow2", "qcow2", "/tmp/con,sole.log", 1024, [], socket_path="/tmp/s/serial")
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev.startswith("socket,id=serial0,path=/tmp/s/serial,server=on,wait=off,")
    assert "logfile=/tmp/con,,sole.log" in chardev
    assert argv[argv.index("-serial") + 1] == "chardev:serial0"


# -- UEFI --------------------------------------------------------------------------------


def test_uefi_boots_q35_with_ovmf_read_only_and_a_fresh_variable_store(tmp_path):
    firmware = bt.uefi_firmware(str(tmp_path))
    copy = tmp_path / bt.OVMF_VARS
    assert copy.read_bytes() == (Path(bt.OVMF_DIR) / bt.OVMF_VARS).read_bytes(), "an empty store, copied for this run"
    assert firmware == ["-machine", "q35",
                        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={bt.OVMF_DIR}/{bt.OVMF_CODE}",
                        "-drive", f"if=pflash,format=raw,unit=1,file={copy}"]
    argv = bt.qemu_command("/img", "qcow2", "/log", 1024, ["-accel", "tcg"], firmware=firmware)
    assert argv[argv.index("-machine") + 1] == "q35" and argv[-2:] == ["-drive", "file=/img,if=virtio,format=qcow2,snapshot=on"]
    assert "-machine" not in bt.qemu_command("/img", "qcow2", "/log", 1024, ["-accel", "tcg"]), "BIOS stays the default"


def test_uefi_without_ovmf_says_what_to_install(tmp_path):
    with pytest.raises(bt.UsageError, match=r"--uefi: .*/OVMF_CODE_4M.fd not found \(install ovmf\)"):
        bt.uefi_firmware(str(tmp_path), ovmf_dir=str(tmp_path / "none"))
