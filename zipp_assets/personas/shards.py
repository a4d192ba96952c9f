"""User shards: a fixed partition set shared by the personas and ZIPBench stages."""

from __future__ import annotations

import hashlib

import dagster as dg

NUM_SHARDS = 16
SHARD_KEYS = [f"{i:03d}" for i in range(NUM_SHARDS)]
shard_partitions = dg.StaticPartitionsDefinition(SHARD_KEYS)


def shard_of(user_id: str) -> str:
    """Stable across runs and machines: a hash of the pseudonym, never Python's salted hash()."""
    return SHARD_KEYS[int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % NUM_SHARDS]


def shard_sql(column: str) -> str:
    """`shard_of` as a DuckDB expression over a column of pseudonyms (the same key for every id). With
    16 shards, the first 8 bytes of the digest modulo 16 are its low 4 bits: the 16th hex digit."""
    if NUM_SHARDS != 16:
        raise ValueError("shard_sql reads one hex digit of the digest: it holds for 16 shards only")
    return f"lpad(CAST(('0x' || substr(sha256({column}), 16, 1))::INTEGER AS VARCHAR), 3, '0')"
