"""The replay's checkpoints: how many rows of a file Kafka has acknowledged.

One JSON file per replayed file, ``<state dir>/<identity>.json`` (the identity
from ``replay_files.file_identity``), replaced atomically (a temporary file,
fsync, rename): a crash leaves the old checkpoint or the new one, whole. The
replay writes it only after Kafka acknowledged the rows it counts, so a run
after Ctrl-C or ``kill -9`` that starts at ``rows`` misses nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(slots=True)
class Checkpoint:
    """How far a file's replay is acknowledged by Kafka."""

    identity: str
    path: str
    rows: int = 0
    total_rows: int | None = None

    @property
    def done(self) -> bool:
        return self.total_rows is not None and self.rows >= self.total_rows


def checkpoint_path(state_dir: Path, identity: str) -> Path:
    return state_dir / f"{identity}.json"


def read_checkpoint(state_dir: Path, identity: str) -> Checkpoint | None:
    try:
        data = json.loads(checkpoint_path(state_dir, identity).read_text())
    except FileNotFoundError:
        return None
    return Checkpoint(identity, str(data["path"]), int(data["rows"]), data.get("total_rows"))


def write_checkpoint(state_dir: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically: a crash leaves the old one or the new one, whole."""
    state_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(state_dir, checkpoint.identity)
    tmp = final.with_suffix(".json.tmp")
    body = {
        "identity": checkpoint.identity,
        "path": checkpoint.path,
        "rows": checkpoint.rows,
        "total_rows": checkpoint.total_rows,
        "updated": datetime.now(UTC).isoformat(),
    }
    with tmp.open("w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(final)
