"""Reproducible tar archives of a tree, for the tar assembler and the tar stage (runs inside the sandbox).

    tar --create --sort=name --numeric-owner --format=pax (no atime/ctime records)
        [--mtime=@EPOCH --clamp-mtime] --xattrs --acls --selinux -C TREE . | COMPRESSOR

The same tree (contents, modes, owners, mtimes, extended attributes, links)
gives the same bytes, whatever its inode numbers, ctimes or directory order.
GNU tar writes extended attributes in the order the filesystem lists them,
which differs between filesystems and with the order they were set in, so the
stream goes through a filter that sorts them inside each pax header (the
header keeps its length, so nothing else moves). Compressors run in modes
whose output does not depend on the machine: gzip -n, xz and zstd with a fixed
number of threads.

Standard library only, Python 3.9 syntax: it runs under the build root's Python.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import IO, Any, Optional

from osbuild.api import StageError

BLOCK = 512
COPY_CHUNK = 1 << 20
XATTR_KEY = b"SCHILY.xattr."

# Multi-threaded xz and zstd output depends on the block size, not on the number
# of threads; a fixed count keeps them out of their single-threaded formats too.
COMPRESSORS: dict[str, Optional[list[str]]] = {
    "none": None,
    "gzip": ["gzip", "-n", "-c"],
    "xz": ["xz", "--threads=2", "-c"],
    "zstd": ["zstd", "-T2", "-q", "--no-progress", "-c"],
    "bzip2": ["bzip2", "-c"],
}
# What `compression: auto` picks by the archive's name, as tar's --auto-compress would.
SUFFIXES = {".gz": "gzip", ".tgz": "gzip", ".xz": "xz", ".txz": "xz", ".zst": "zstd", ".tzst": "zstd",
            ".bz2": "bzip2", ".tbz2": "bzip2"}


@dataclass
class Archive:
    """What goes into an archive and how: tar's format, which metadata, which members."""

    tar_format: str = "pax"
    xattrs: bool = True
    acls: bool = True
    selinux: bool = True
    numeric_owner: bool = True
    sparse: bool = False
    transform: Optional[str] = None
    # The members, in order: "." (the root node included) by default.
    members: list[str] = field(default_factory=lambda: ["."])

    def command(self, tree: str, epoch: Optional[int]) -> list[str]:
        argv = ["tar", "--create", "--file=-", f"--directory={tree}", "--sort=name", f"--format={self.tar_format}"]
        if self.tar_format in ("pax", "posix"):
            argv.append("--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime")
        if self.numeric_owner:
            argv.append("--numeric-owner")
        if epoch is not None:
            argv += [f"--mtime=@{epoch}", "--clamp-mtime"]
        if self.xattrs:
            # ACLs and SELinux labels travel in their own records (--acls, --selinux) or not at all.
            argv += ["--xattrs", "--xattrs-include=*",
                     "--xattrs-exclude=system.posix_acl_*", "--xattrs-exclude=security.selinux"]
        else:
            argv.append("--no-xattrs")
        argv.append("--acls" if self.acls else "--no-acls")
        argv.append("--selinux" if self.selinux else "--no-selinux")
        if self.sparse:
            argv.append("--sparse")
        if self.transform is not None:
            argv.append(f"--transform={self.transform}")
        argv.append("--")
        argv += self.members
        return argv


def compression_for(name: str, compression: str) -> str:
    """The compressor's name: `compression` itself, or for "auto" the one the file name's suffix says."""
    if compression != "auto":
        if compression not in COMPRESSORS:
            raise StageError(f"unknown compression {compression!r}")
        return compression
    for suffix, found in SUFFIXES.items():
        if name.endswith(suffix):
            return found
    return "none"


def write_tar(tree: str, output: IO[bytes], archive: Archive, compression: str, epoch: Optional[int]) -> None:
    """Write the archive of `tree` to `output`, compressed; a failing tool fails the stage in one line."""
    compressor = COMPRESSORS[compression]
    tar_argv = archive.command(tree, epoch)
    print("+ " + " ".join(tar_argv) + (" | " + " ".join(compressor) if compressor else ""), flush=True)
    pack = _start(compressor, stdin=subprocess.PIPE, stdout=output) if compressor else None
    try:
        tar = _start(tar_argv, stdout=subprocess.PIPE)
    except StageError:
        if pack and pack.stdin:
            pack.stdin.close()
            pack.wait()
        raise
    assert tar.stdout is not None
    sink = pack.stdin if pack else output
    assert sink is not None
    try:
        copy_sorting_xattrs(tar.stdout, sink)
    except BrokenPipeError:
        pass  # the compressor died: its status says why
    finally:
        tar.stdout.close()
        if pack and pack.stdin:
            pack.stdin.close()
    tar_status = tar.wait()
    if pack and compressor and pack.wait() != 0:
        raise StageError(f"{compressor[0]} failed with exit status {pack.returncode}")
    if tar_status != 0:
        raise StageError(f"tar failed with exit status {tar_status}")


def _start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, **kwargs)
    except FileNotFoundError:
        raise StageError(f"{argv[0]}: not found in the build root") from None


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _header_size(header: bytes) -> int:
    size_field = header[124:136]
    if size_field[0] & 0x80:
        return int.from_bytes(size_field[1:], "big")
    digits = size_field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax_records(data: bytes) -> list[bytes]:
    """Split pax extended header data into its records ("LEN key=value\\n")."""
    records = []
    position = 0
    while position < len(data):
        space = data.index(b" ", position)
        length = int(data[position:space])
        records.append(data[position:position + length])
        position += length
    return records


def _record_key(record: bytes) -> bytes:
    return record.split(b" ", 1)[1].split(b"=", 1)[0]


def _sorted_xattrs(data: bytes) -> bytes:
    """The same records, with the extended-attribute ones sorted by name in the slots they held."""
    records = _pax_records(data)
    slots = [i for i, r in enumerate(records) if _record_key(r).startswith(XATTR_KEY)]
    ordered = sorted((records[i] for i in slots), key=_record_key)
    for slot, record in zip(slots, ordered):
        records[slot] = record
    return b"".join(records)


def _pax_size(records: list[bytes]) -> Optional[int]:
    for record in records:
        if _record_key(record) == b"size":
            return int(record.split(b"=", 1)[1])
    return None


def copy_sorting_xattrs(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy a tar stream, sorting the extended attributes inside each pax header."""
    next_size = None
    while True:
        header = _read_exact(source, BLOCK)
        if not header:
            return
        if len(header) < BLOCK:
            raise StageError("tar produced a truncated archive")
        sink.write(header)
        if header == b"\0" * BLOCK:
            continue
        size = _header_size(header)
        if next_size is not None:
            size, next_size = next_size, None
        padded = -(-size // BLOCK) * BLOCK
        if header[156:157] == b"x":
            data = _read_exact(source, padded)
            body = _sorted_xattrs(data[:size])
            next_size = _pax_size(_pax_records(body))
            sink.write(body + data[size:])
            continue
        remaining = padded
        while remaining:
            chunk = source.read(min(remaining, COPY_CHUNK))
            if not chunk:
                raise StageError("tar produced a truncated archive")
            sink.write(chunk)
            remaining -= len(chunk)
