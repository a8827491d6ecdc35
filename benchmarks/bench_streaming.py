"""Tables larger than memory: peak memory of ``curve`` and ``tune`` (their defaults, bootstrap
included) on a Parquet folder streamed a chunk of prompts at a time, against the same calls on the
table held in memory, and the table's own size.

The table: 2,000 prompts x 2,000 responses (4 M rows, two float columns and the prompt id) in 8
shards; the stream holds 100 prompts (200,000 rows) at a time, a twentieth of the table. Besides
its chunk, a pass keeps per-prompt state and the bootstrap's (replicates x pool size) sums: with
1,000 replicates and pools of 2,000 that is 16 MB, whatever the number of prompts. Peak memory
is measured with ``tracemalloc`` (NumPy and Arrow buffers allocated through Python included).
Run: ``.venv/bin/python benchmarks/bench_streaming.py``.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import hedgetune as ht


def peak(fn: Callable[[], Any]) -> tuple[float, float]:
    """Peak traced memory (bytes) above the start, and seconds, of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start, before = time.perf_counter(), tracemalloc.get_traced_memory()[0]
    fn()
    seconds = time.perf_counter() - start
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return top - before, seconds


def main(prompts: int = 2000, m: int = 2000, chunk: int = 100) -> dict[str, float]:
    pa.set_memory_pool(pa.system_memory_pool())  # Arrow buffers through malloc, visible to tracing
    table = ht.synthetic.make_table("toy", prompts, m, noise=0.3, seed=0)
    size = float(table.proxies["proxy_reward"].nbytes + table.require_true_reward().nbytes + 8 * table.n_responses)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        for k, part in enumerate(np.array_split(np.arange(prompts), 8)):
            ht.write_table(table.subset(part), Path(root) / f"part-{k:03d}.parquet")
        del table
        print(f"{prompts} prompts x {m} responses ({size / 2**20:.0f} MiB of columns); stream of {chunk} prompts")
        for name in ("bon", "bop"):
            for what, call in (("curve", ht.curve), ("tune", ht.tune)):
                memory, seconds = peak(lambda: call(ht.read_table(root), name))  # noqa: B023
                s_memory, s_seconds = peak(lambda: call(ht.scan_table(root, chunk_prompts=chunk), name))  # noqa: B023
                out[f"{what} {name} in memory"] = memory / size
                out[f"{what} {name} streamed"] = s_memory / size
                print(
                    f"  {what:<5} {name:<4} in memory: peak {memory / size:5.2f}x the table, {seconds:5.2f} s; "
                    f"streamed: peak {s_memory / size:5.2f}x the table, {s_seconds:5.2f} s"
                )
    return out


if __name__ == "__main__":
    main()
