"""Building and reading calibration tables: ``RewardTable.from_arrays`` on 800 prompts x 12,600
candidates against its own floor, two defensive copies of the columns and one pass over them
(target <= 1.2x; the table never aliases a caller's arrays), and against ``np.sort`` of the matrix
(for reference), and ``read_table`` of that table as
Parquet (10 M rows) against ``pyarrow.parquet.read_table`` of the same file (target <= 2x) (best of
5, timed in alternation with the baseline), with peak memory (tracemalloc) as a share of the table's columns.

Run: ``.venv/bin/python benchmarks/bench_tables.py``.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _timing import alternating

import hedgetune as ht


def main(prompts: int = 800, m: int = 12_600) -> dict[str, float]:
    pa.set_memory_pool(pa.system_memory_pool())
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(prompts, m))
    true = proxy + rng.normal(size=(prompts, m))
    size = float(proxy.nbytes + true.nbytes)
    build, sort = alternating(lambda: ht.RewardTable.from_arrays(proxy, true), lambda: np.sort(proxy, axis=1))

    def floor() -> float:  # the two copies the table keeps, and one pass over them (its checks)
        a, b = proxy.copy(), true.copy()
        return float(np.dot(a.ravel(), a.ravel()) + np.dot(b.ravel(), b.ravel()))

    build_again, copies = alternating(lambda: ht.RewardTable.from_arrays(proxy, true), floor)
    tracemalloc.start()
    ht.RewardTable.from_arrays(proxy, true)
    build_peak = tracemalloc.get_traced_memory()[1] / size
    tracemalloc.stop()
    out = {"from_arrays / sort": build / sort, "from_arrays / copies+pass": build_again / copies,
           "from_arrays peak / table": build_peak}
    print(f"{prompts} x {m:,} ({size / 2**20:.0f} MiB): np.sort {sort:.3f} s; two copies + one pass {copies:.3f} s")
    print(f"  RewardTable.from_arrays   {build:.3f} s = {build / sort:.2f}x sort, {build_again / copies:.2f}x the copies "
          f"and a pass (target <= 1.2x); peak {build_peak:.2f}x the table")
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "t.parquet"
        ht.write_table(ht.RewardTable.from_arrays(proxy, true), path)
        ours, raw = alternating(lambda: ht.read_table(path), lambda: pq.read_table(path))
        out["read_table / pyarrow"] = ours / raw
        arrow = pa.proxy_memory_pool(pa.system_memory_pool())  # counts Arrow's peak from here on
        pa.set_memory_pool(arrow)
        tracemalloc.start()
        ht.read_table(path)
        numpy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        read_peak = (numpy_peak + arrow.max_memory()) / size  # an upper bound: the two peaks may not coincide
        out["read_table peak / table"] = read_peak
        print(
            f"  read_table (Parquet)      {ours:.3f} s = {ours / raw:.2f}x pyarrow.parquet.read_table ({raw:.3f} s); "
            f"peak at most {read_peak:.2f}x the table (NumPy's and Arrow's)"
        )
    return out


if __name__ == "__main__":
    main()
