#!/usr/bin/env python3
"""Writes the seed corpus of the `file_log_recovery` target into corpus/file_log_recovery/.

Each seed is one input of the target (see fuzz_targets/file_log_recovery.rs): a first byte that
picks the mode, then either the segment bytes as they are (even) or the payloads of a log the
target builds with FileLog::append and the damage it then does (odd). Frames are written here as
the file log's format defines them (crates/waitroom-log/src/file.rs): payload length u32 LE,
CRC-32C u32 LE of the timestamp and the payload, timestamp_ms u64 LE, payload. Run from fuzz/:
    python3 file_log_seeds.py
"""
import os
import struct

# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frame(timestamp_ms, payload):
    checked = struct.pack("<Q", timestamp_ms) + payload
    return struct.pack("<II", len(payload), crc32c(checked)) + checked


def records():
    """Real records (the record decoder's seeds) as payloads, in a fixed order."""
    here = os.path.join("corpus", "record_decode")
    return [open(os.path.join(here, name), "rb").read() for name in sorted(os.listdir(here))]


def main():
    out = os.path.join("corpus", "file_log_recovery")
    os.makedirs(out, exist_ok=True)
    payloads = records()
    log = b"".join(frame(1_764_000_000_000 + i, p) for i, p in enumerate(payloads[:4]))
    first = len(frame(0, payloads[0]))
    bad_crc = bytearray(log)
    bad_crc[first + 20] ^= 0x40  # inside the second frame: a valid frame follows it
    seeds = {
        # Mode 0: the bytes of one segment.
        "raw_empty": b"\x00",
        "raw_valid": b"\x00" + log,
        "raw_torn_header": b"\x00" + log + b"\x07\x00\x00",
        "raw_torn_payload": b"\x00" + log + frame(1_764_000_000_100, payloads[4])[:-3],
        "raw_zeroes_tail": b"\x00" + log + bytes(64),
        "raw_huge_length": b"\x00" + log + struct.pack("<II", 0xFFFFFFF0, 0) + bytes(8),
        "raw_bad_crc_then_valid": b"\x00" + bytes(bad_crc),
        "raw_bad_crc_last": b"\x00" + log[:-1] + bytes([log[-1] ^ 1]),
        # Mode 0, two segments split after the first frame (and inside the second).
        "raw_two_segments": b"\x00\x01" + struct.pack("<H", first) + log,
        "raw_two_segments_cut": b"\x00\x01" + struct.pack("<H", first + 5) + log,
        # Mode 1: payloads (length byte n: n * 8 bytes cycled from 4 seed bytes; 0 ends), then
        # the damage: kind (0 cut, 1 overwrite, 2 flip a bit, 3 add a tail), segment, offset u16
        # LE, bit, tail.
        "built_clean": b"\x01" + b"\x04abcd\x10wxyz\x00",
        "built_cut": b"\x01" + b"\x04abcd\x10wxyz\x00" + b"\x00\x00" + struct.pack("<H", 60) + b"\x00",
        "built_overwrite": b"\x01" + b"\x04abcd\x10wxyz\x00" + b"\x01\x00" + struct.pack("<H", 20) + b"\x00ZZZZ",
        "built_bit_flip": b"\x01" + b"\x04abcd\x10wxyz\x00" + b"\x02\x00" + struct.pack("<H", 3) + b"\x05",
        "built_tail": b"\x01" + b"\x04abcd\x10wxyz\x00" + b"\x03\x00\x00\x00\x00" + b"\x10\x00\x00",
        # Enough to roll over into a second segment (4 KiB segments), damaged in the first.
        "built_rolled_over": b"\x01" + b"\xffabcd" * 3 + b"\x00" + b"\x02\x00" + struct.pack("<H", 100) + b"\x01",
        "built_rolled_over_tail": b"\x01" + b"\xffabcd" * 3 + b"\x00" + b"\x00\x01" + struct.pack("<H", 10) + b"\x00",
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
