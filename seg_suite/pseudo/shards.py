"""Shards of a dataset run, the digest that seals a shard file, and the names of the files a run writes.

Chunk ``j`` of ``batch_size`` consecutive items of the full sorted key list belongs to shard
``j % K`` (see :class:`ShardSpec` and the runner's module docstring for why). The shard can also come from a SLURM job array or torchrun.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from seg_suite.errors import UserError


def _env_int(env, name) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``shard_id`` (0-based) of ``num_shards``.

    The full sorted item list is cut into chunks of ``batch_size`` consecutive items (the
    batches the model sees); chunk ``j`` belongs to shard ``j % num_shards``. Whole chunks,
    not single items, are dealt out so that every batch is the same in a sharded and an
    unsharded run with the same batch size: results are then byte-identical even when a
    backbone's output depends slightly on what else is in its batch.
    """

    num_shards: int = 1
    shard_id: int = 0

    def __post_init__(self):
        if self.num_shards < 1:
            raise UserError(f"the number of shards must be at least 1, got {self.num_shards}")
        if not 0 <= self.shard_id < self.num_shards:
            raise UserError(f"shard id must be in 0..{self.num_shards - 1}, got {self.shard_id}")

    @classmethod
    def from_env(cls, env: dict | None = None) -> "ShardSpec | None":
        """Shard from a SLURM job array or torchrun, or None when neither is present.

        SLURM: ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_COUNT`` (or ``..._MIN``/``..._MAX``
        and ``..._STEP``). torchrun: ``RANK``/``WORLD_SIZE``. SLURM wins when both are set.
        """
        env = os.environ if env is None else env
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        if task is not None:
            lo = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
            step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
            count = _env_int(env, "SLURM_ARRAY_TASK_COUNT")
            if count is None:
                hi = _env_int(env, "SLURM_ARRAY_TASK_MAX")
                if hi is None:
                    raise UserError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor _MAX is")
                count = (hi - lo) // step + 1
            return cls(count, (task - lo) // step)
        rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
        if rank is not None and world is not None:
            return cls(world, rank)
        return None

    @classmethod
    def resolve(cls, num_shards: int | None = None, shard_id: int | None = None,
                env: dict | None = None) -> "ShardSpec":
        """Explicit values win over the environment; a missing one is taken from it."""
        from_env = cls.from_env(env)
        if num_shards is None:
            num_shards = from_env.num_shards if from_env else 1
        if shard_id is None:
            if from_env is not None:
                shard_id = from_env.shard_id
            elif num_shards == 1:
                shard_id = 0
            else:
                raise UserError(f"--num-shards {num_shards} needs --shard-id (or a SLURM array / torchrun environment)")
        return cls(num_shards, shard_id)

    def chunks(self, num_items: int, batch_size: int = 1) -> list[list[int]]:
        """This shard's chunks, as lists of indices into the full sorted item list."""
        starts = range(self.shard_id * batch_size, num_items, self.num_shards * batch_size)
        return [list(range(start, min(start + batch_size, num_items))) for start in starts]

    def select(self, items: Sequence, batch_size: int = 1) -> list:
        """This shard's items, in order."""
        return [items[i] for chunk in self.chunks(len(items), batch_size) for i in chunk]

    def as_dict(self) -> dict:
        return {"num_shards": self.num_shards, "shard_id": self.shard_id}


# ------------------------------------------------------------------- shard digest
SHARD_DIGEST_KEY = "content_sha256"


def shard_content_digest(doc: dict) -> str:
    """SHA-256 of a shard file's content: every field but the digest, as canonical JSON.

    Canonical means sorted keys, no whitespace, non-ASCII escaped, so the digest depends on the
    values only, not on how a file was re-indented. It covers the records and failures (what an
    edit would change) and the header (params, input digest), so merge can trust both.
    """
    from seg_suite.io.files import json_default

    body = {k: v for k, v in doc.items() if k != SHARD_DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -------------------------------------------------------------------- file names
def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def shard_output_path(output: str | os.PathLike, shard: ShardSpec) -> Path:
    """Where shard ``shard`` of a run with final output ``output`` writes (the output itself if K=1)."""
    output = Path(output)
    if shard.num_shards == 1:
        return output
    return output.with_name(f"{_stem(output)}.shard-{shard.shard_id:05d}-of-{shard.num_shards:05d}.json")


def sidecar_path(output: str | os.PathLike, kind: str) -> Path:
    """``<stem>.journal.jsonl``, ``<stem>.failures.jsonl`` or ``<stem>.log.jsonl`` beside ``output``."""
    output = Path(output)
    suffix = {"journal": ".journal.jsonl", "failures": ".failures.jsonl", "log": ".log.jsonl"}[kind]
    return output.with_name(_stem(output) + suffix)
