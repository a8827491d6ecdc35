"""The gateway's decision log, and calibration tables made from it ("closing the loop").

With ``--log DIR`` every hedged request appends one row per candidate (request id, prompt,
candidate index, response, proxy score, whether it was chosen, the policy) to Parquet shards,
written atomically and rotated every ``rotate`` requests. :func:`table_from_log` joins the log with
gold labels (JSONL rows ``{"request_id", "candidate", "true_reward"}``) into a calibration table,
so a deployment can be re-tuned on its own traffic.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, remove_stale_temporaries
from ..io import read_shards
from ..table import RewardTable, TableError

_COLUMNS = ("request_id", "time", "route", "prompt", "candidate", "response", "score", "chosen", "mechanism", "theta", "proxy")


class DecisionLog:
    """Buffers decision rows and writes them as Parquet shards ``log-<time>-<id>.parquet``."""

    def __init__(self, folder: str | os.PathLike[str], rotate: int = 256) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)
        self.rotate = rotate
        self.rows: list[dict[str, Any]] = []
        self.requests = 0

    def add(self, route: str, prompt: str, responses: list[str], scores: list[float], chosen: int, decision: dict[str, Any]) -> str:
        request_id = uuid.uuid4().hex
        now = time.time()
        for k, (response, score) in enumerate(zip(responses, scores, strict=True)):
            self.rows.append(
                {
                    "request_id": request_id,
                    "time": now,
                    "route": route,
                    "prompt": prompt,
                    "candidate": k,
                    "response": response,
                    "score": float(score),
                    "chosen": k == chosen,
                    "mechanism": decision["mechanism"],
                    "theta": float(decision["theta"]),
                    "proxy": decision["proxy"],
                }
            )
        self.requests += 1
        if self.requests % self.rotate == 0:
            self.flush()
        return request_id

    def flush(self) -> Path | None:
        """Write the buffered rows as one shard (atomically); nothing when the buffer is empty."""
        if not self.rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [row[c] for row in self.rows] for c in _COLUMNS})
        path = self.folder / f"log-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        self.rows = []
        return path


def read_log(folder: str | os.PathLike[str]) -> Any:
    """Every shard of a decision log as one ``pyarrow.Table``."""
    shards = sorted(Path(folder).glob("log-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no decision-log shards in {str(folder)!r}")
    return read_shards(shards, "log shard")


def table_from_log(folder: str | os.PathLike[str], gold: str | os.PathLike[str], missing: str = "raise") -> RewardTable:
    """A calibration table from a decision log and gold labels: one prompt per request, its
    candidates as the pool, the logged score as the proxy (named after it), the gold label as the
    true reward. Candidates without a gold label are refused (``missing="raise"``) or dropped with
    their count in the table's ``dropped`` (``missing="drop"``); requests left with a single
    candidate (Best-of-Poisson draws one with probability e^-mu) rank nothing and are dropped and
    counted likewise."""
    if missing not in ("raise", "drop"):
        raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
    log = read_log(folder)
    labels: dict[tuple[str, int], float] = {}
    with open(gold) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (str(row["request_id"]), int(row["candidate"]))
                value = float(row["true_reward"])
            except (ValueError, KeyError, TypeError):
                raise TableError(f"line {number} of {str(gold)!r} is not {{request_id, candidate, true_reward}}") from None
            if key in labels:
                raise TableError(f"line {number} of {str(gold)!r} labels {key} a second time")
            labels[key] = value
    ids = log.column("request_id").to_pylist()
    candidates = log.column("candidate").to_pylist()
    proxies = sorted(set(log.column("proxy").to_pylist()))
    if len(proxies) != 1:
        raise TableError(f"the log mixes proxies {proxies}: build one table per proxy")
    true = np.array([labels.get((i, c), np.nan) for i, c in zip(ids, candidates, strict=True)])
    unlabelled = int(np.isnan(true).sum())
    if unlabelled and missing == "raise":
        raise TableError(f"{unlabelled} logged candidates have no gold label; label them or pass missing='drop'")
    keep = ~np.isnan(true)
    # A request with a single (labelled) candidate ranks nothing: it cannot join a calibration table.
    request_index = {r: k for k, r in enumerate(dict.fromkeys(ids))}
    rows = np.array([request_index[i] for i in ids])
    counts = np.bincount(rows[keep], minlength=len(request_index))
    single = keep & (counts[rows] < 2)
    keep &= ~single
    unlabelled += int(single.sum())
    if not keep.any():
        raise TableError("no logged request has two or more labelled candidates")
    table = RewardTable.from_long(
        np.asarray(ids, dtype=object)[keep],
        {proxies[0]: np.asarray(log.column("score").to_numpy(), dtype=float)[keep]},
        true[keep],
        provenance={proxies[0]: f"gateway decision log {str(folder)!r}"},
    )
    if unlabelled:
        import dataclasses

        table = dataclasses.replace(table, dropped=table.dropped + unlabelled)
    return table
