"""The gateway's decision log, and calibration tables made from it ("closing the loop").

With ``--log DIR`` every hedged request appends one row per candidate (request id, the prompt
text the scorer saw and the whole request context, candidate index, response, proxy score, its
calibration quantile, why it was flagged, whether it was eligible, whether it duplicates another,
whether it was chosen,
the samples spent, the fallback taken, the policy) to Parquet shards.

Durability and privacy: rows are buffered and written as one shard at most every
``flush_requests`` requests (64) or ``flush_seconds`` (5 s) after the oldest unwritten one, or as
soon as the buffer holds ``max_bytes`` (16 MiB), so memory is bounded and a crash (even SIGKILL)
loses at most that window. Shards are written atomically with mode 0600 (they hold prompts and
responses), named ``log-<time>-<pid>-<random>.parquet`` so that replicas sharing a folder never
collide. :func:`table_from_log` joins the log with gold labels (JSONL rows ``{"request_id",
"candidate", "true_reward"}``) into a calibration table, so a deployment can be re-tuned on its own
traffic.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..io import read_shards
from ..table import RewardTable, TableError

_COLUMNS = (
    "request_id", "time", "route", "prompt", "context", "candidate", "response", "score", "quantile",
    "flag", "eligible", "duplicate", "chosen", "samples", "fallback", "mechanism", "theta", "proxy",
)


class DecisionLog:
    """Buffers decision rows and writes them as Parquet shards (module docstring). Thread-safe."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        flush_requests: int = 64,
        flush_seconds: float = 5.0,
        max_bytes: int = 16 << 20,
    ) -> None:
        if flush_requests < 1 or not flush_seconds > 0 or max_bytes < 1:
            raise ValueError("flush_requests, flush_seconds and max_bytes must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.flush_requests, self.flush_seconds, self.max_bytes = flush_requests, flush_seconds, max_bytes
        self.rows: list[dict[str, Any]] = []
        self.requests = 0
        self.bytes = 0
        self.oldest: float | None = None
        self._lock = threading.Lock()

    def add(self, route: str, prompt: str, context: str, candidates: list[dict[str, Any]], decision: dict[str, Any]) -> str:
        """Buffer one request: ``candidates`` holds per candidate ``response``, ``score``,
        ``quantile``, ``flag`` (the support reason or None), ``eligible`` (whether selection could
        choose it), ``duplicate``, ``chosen``; returns its id."""
        request_id = uuid.uuid4().hex
        now = time.time()
        rows = []
        for k, c in enumerate(candidates):
            rows.append({
                "request_id": request_id, "time": now, "route": route, "prompt": prompt, "context": context,
                "candidate": k, "response": c["response"], "score": _float(c["score"]), "quantile": _float(c["quantile"]),
                "flag": c["flag"] or "", "eligible": bool(c["eligible"]), "duplicate": bool(c["duplicate"]), "chosen": bool(c["chosen"]),
                "samples": int(decision["candidates"]), "fallback": decision.get("fallback") or "",
                "mechanism": decision["mechanism"], "theta": float(decision["theta"]), "proxy": decision["proxy"],
            })
        size = len(prompt) + len(context) + sum(len(r["response"]) + 200 for r in rows)
        with self._lock:
            self.rows.extend(rows)
            self.requests += 1
            self.bytes += size
            self.oldest = now if self.oldest is None else self.oldest
            full = self.requests >= self.flush_requests or self.bytes >= self.max_bytes
        if full:
            self.flush()
        return request_id

    def due(self) -> bool:
        """Whether the oldest buffered row has waited ``flush_seconds``."""
        oldest = self.oldest
        return oldest is not None and time.time() - oldest >= self.flush_seconds

    def flush(self) -> Path | None:
        """Write the buffered rows as one shard (atomically, 0600); nothing when the buffer is empty."""
        with self._lock:
            rows, self.rows = self.rows, []
            self.requests, self.bytes, self.oldest = 0, 0, None
        if not rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: [row[c] for row in rows] for c in _COLUMNS})
        path = self.folder / f"log-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(path, mode=0o600) as tmp:
            pq.write_table(table, tmp)
        return path


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


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
    scores = np.asarray(log.column("score").to_numpy(zero_copy_only=False), dtype=float)
    unlabelled = int(np.isnan(true).sum())
    if unlabelled and missing == "raise":
        raise TableError(f"{unlabelled} logged candidates have no gold label; label them or pass missing='drop'")
    # A candidate the scorer could not score has no proxy value: it cannot join the table.
    unscored = int((~np.isnan(true) & np.isnan(scores)).sum())
    keep = ~np.isnan(true) & ~np.isnan(scores)
    unlabelled += unscored
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
        {proxies[0]: scores[keep]},
        true[keep],
        provenance={proxies[0]: f"gateway decision log {str(folder)!r}"},
    )
    if unlabelled:
        import dataclasses

        table = dataclasses.replace(table, dropped=table.dropped + unlabelled)
    return table
