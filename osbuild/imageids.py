"""Pin the random ids and times qemu-img writes into vmdk, vdi, vpc and vhdx files.

qemu-img makes qcow2 and raw files from the same disk byte for byte the same;
the other formats get fresh random ids (and vpc the time) on every conversion:

    vmdk  the descriptor's CID
    vdi   the image and last-snapshot UUIDs in the header
    vpc   the footer's UUID and timestamp (and the footer checksum over them)
    vhdx  the headers' sequence numbers and file and data write GUIDs (and their
          CRC-32C), the virtual disk id in the metadata region, and stale log entries
          left by creation

`pin(path, fmt, seed, epoch)` rewrites exactly those fields with values derived
from `seed` (a UUID from the manifest) and `epoch`, in place, so the same disk
gives the same file. Runs inside the sandbox: standard library only, Python 3.9.
"""

from __future__ import annotations

import re
import struct
import uuid as uuidlib
from typing import BinaryIO, Optional

VPC_EPOCH = 946684800            # the VHD format counts seconds from 2000-01-01
VHDX_HEADERS = (64 * 1024, 128 * 1024)
VHDX_HEADER_SIZE = 4096
VHDX_REGION_TABLE = 192 * 1024
VHDX_METADATA_REGION = uuidlib.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
VHDX_PAGE83 = uuidlib.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")


def derived(seed: str, name: str) -> uuidlib.UUID:
    return uuidlib.uuid5(uuidlib.UUID(seed), name)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as VHDX checksums its headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def pin_vmdk(f: BinaryIO, seed: str) -> None:
    # qemu prints the CID without leading zeros, so its length varies: rewrite the
    # descriptor text in its region (from the sparse extent header), zero-padded.
    f.seek(0)
    header = f.read(512)
    if header[:4] != b"KDMV":
        raise ValueError("no vmdk sparse extent header")
    offset, size = struct.unpack_from("<QQ", header, 28)
    f.seek(offset * 512)
    region = f.read(size * 512)
    # The descriptor ends at its first NUL (what qemu reads); bytes after it are left over, not text.
    text = region.split(b"\0", 1)[0]
    pinned, count = re.subn(rb"\nCID=[0-9a-f]{1,8}\n", b"\nCID=" + derived(seed, "vmdk-cid").hex[:8].encode() + b"\n", text)
    if count != 1 or len(pinned) > len(region):
        raise ValueError("no CID in the vmdk descriptor")
    f.seek(offset * 512)
    f.write(pinned + bytes(len(region) - len(pinned)))


def pin_vdi(f: BinaryIO, seed: str) -> None:
    f.seek(0x188)
    f.write(derived(seed, "vdi-image").bytes + derived(seed, "vdi-last-snapshot").bytes)


def _vpc_footer(footer: bytearray, seed: str, epoch: Optional[int]) -> bytes:
    if footer[:8] != b"conectix":
        raise ValueError("no VHD footer")
    if epoch is not None:
        struct.pack_into(">I", footer, 24, max(epoch - VPC_EPOCH, 0))
    footer[68:84] = derived(seed, "vpc-disk").bytes
    footer[64:68] = b"\0\0\0\0"
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


def pin_vpc(f: BinaryIO, seed: str, epoch: Optional[int]) -> None:
    f.seek(0, 2)
    end = f.tell()
    for offset in (0, end - 512):
        f.seek(offset)
        footer = bytearray(f.read(512))
        if footer[:8] != b"conectix":
            continue  # a fixed VHD has only the footer at the end
        f.seek(offset)
        f.write(_vpc_footer(footer, seed, epoch))


def pin_vhdx(f: BinaryIO, seed: str) -> None:
    log_offset = log_length = 0
    headers = []
    for offset in VHDX_HEADERS:
        f.seek(offset)
        header = bytearray(f.read(VHDX_HEADER_SIZE))
        if header[:4] != b"head":
            raise ValueError("no VHDX header")
        if header[48:64] != bytes(16):
            raise ValueError("the VHDX log is not empty")
        headers.append((struct.unpack_from("<Q", header, 8)[0], offset, header))
    # qemu starts the sequence at a random number; the current header is the one with the higher.
    for sequence, (_, offset, header) in enumerate(sorted(headers), start=1):
        struct.pack_into("<Q", header, 8, sequence)
        header[16:32] = derived(seed, "vhdx-file-write").bytes_le
        header[32:48] = derived(seed, "vhdx-data-write").bytes_le
        header[4:8] = b"\0\0\0\0"
        struct.pack_into("<I", header, 4, crc32c(bytes(header)))
        log_length, log_offset = struct.unpack_from("<IQ", header, 68)
        f.seek(offset)
        f.write(header)
    # With a zero log GUID the log is empty; what creation left in it is never replayed.
    f.seek(log_offset)
    f.write(bytes(log_length))
    f.seek(VHDX_REGION_TABLE)
    table = f.read(64 * 1024)
    (count,) = struct.unpack_from("<I", table, 8)
    for i in range(count):
        guid = uuidlib.UUID(bytes_le=table[16 + 32 * i:32 + 32 * i])
        region_offset, _ = struct.unpack_from("<QI", table, 32 + 32 * i)
        if guid != VHDX_METADATA_REGION:
            continue
        f.seek(region_offset)
        metadata = f.read(64 * 1024)
        (entries,) = struct.unpack_from("<H", metadata, 10)
        for j in range(entries):
            entry = 32 + 32 * j
            item = uuidlib.UUID(bytes_le=metadata[entry:entry + 16])
            item_offset, length = struct.unpack_from("<II", metadata, entry + 16)
            if item == VHDX_PAGE83 and length == 16:
                f.seek(region_offset + item_offset)
                f.write(derived(seed, "vhdx-virtual-disk").bytes_le)


def pin(path: str, fmt: str, seed: str, epoch: Optional[int] = None) -> None:
    """Rewrite the random ids (and times) of an image file of format `fmt` from `seed` and `epoch`."""
    with open(path, "r+b") as f:
        if fmt == "vmdk":
            pin_vmdk(f, seed)
        elif fmt == "vdi":
            pin_vdi(f, seed)
        elif fmt == "vpc":
            pin_vpc(f, seed, epoch)
        elif fmt == "vhdx":
            pin_vhdx(f, seed)
