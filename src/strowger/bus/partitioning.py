"""Which partition a key lands on: Kafka's default partitioner (murmur2), everywhere.

Using the very function Kafka's Java client uses means the embedded log, the
outbox's relay partitions and a Kafka topic all agree on where a key lives, in
every process and across restarts (unlike Python's salted ``hash``).
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32 bit) exactly as ``org.apache.kafka.common.utils.Utils.murmur2``, as a signed int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for k in struct.unpack_from(f"<{whole // 4}I", data):  # the 4-byte little-endian words
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) ^ (k * _M)) & _MASK  # masking once after the xor: the same low 32 bits
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: ``toPositive(murmur2(utf8(key))) % partitions``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition (got {partitions})")
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
