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
