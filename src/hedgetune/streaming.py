"""Tables larger than memory: a calibration table read from disk a chunk of prompts at a time.

Every curve is a sum over prompts (:func:`hedgetune.curves.pool_sums`), and so is each bootstrap
replicate (a weighted sum with the replicate's counts of each prompt). :class:`StreamedPools`
therefore stands in for :class:`~hedgetune.pools.Pools` anywhere: each pass over its ``groups``
reads the Parquet files in order, builds the pools of ``chunk_prompts`` whole prompts at a time and
hands them on with their global prompt positions, so :func:`hedgetune.curve`, :func:`hedgetune.tune`
and :func:`hedgetune.evaluate` give the in-memory results (to rounding: sums in another order)
while holding one chunk of responses at a time. What stays in memory besides the chunk is per
prompt, never per response: the bootstrap counts (replicates x prompts) and each prompt's pool size.

The files (one file, or every ``*.parquet`` of a folder in name order, as the pipeline writes
them) must keep each prompt's responses together; a prompt that reappears later is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._input import parquet_files as parquet_files
from .arrays import IntArray
from .pools import Pools, SharedValues, SizeGroup, build_pools
from .table import RewardTable, TableError


class StreamedPools(Pools):
    """The pools of a Parquet table (a file or a folder of them), built a chunk at a time.

    ``proxy`` ranks the responses (default: the files' recorded default proxy); ``extras`` are the
    columns a mechanism needs besides it (see :class:`~hedgetune.mechanisms.SetRule`);
    ``chunk_prompts`` is how many whole prompts are held at once. Reading the files once up front
    finds the prompts, their pool sizes and the true rewards' range (one column at a time).
    """

    __setattr__ = object.__setattr__  # Pools is frozen; this view keeps its own reading state

    def __init__(
        self,
        path: str | os.PathLike[str],
        proxy: str | None = None,
        *,
        extras: Sequence[str] = (),
        chunk_prompts: int = 1000,
        prompt_col: str = "prompt_id",
        true_col: str = "true_reward",
        batch_rows: int = 65536,
        _selection: IntArray | None = None,
    ) -> None:
        if not isinstance(chunk_prompts, int) or isinstance(chunk_prompts, bool) or chunk_prompts < 1:
            raise ValueError(f"chunk_prompts must be a whole number >= 1, got {chunk_prompts!r}")
        self.files = parquet_files(path)
        self.path = Path(path)
        self.chunk_prompts, self.batch_rows = chunk_prompts, batch_rows
        self.prompt_col, self.true_col = prompt_col, true_col
        self.extras = tuple(extras)
        name = proxy or self._recorded_proxy()
        sizes, low, high = self._survey(name)
        self.sizes = sizes  # pool size of every prompt, in file order
        self.selection = _selection  # global prompt -> position in this view (-1: left out)
        count = int(sizes.size if _selection is None else (_selection >= 0).sum())
        if count == 0:
            raise TableError("the streamed table has no prompts")
        kept = sizes if _selection is None else sizes[_selection >= 0]
        object.__setattr__(self, "n_prompts", count)
        object.__setattr__(self, "proxy_name", name)
        self._min, self._max = int(kept.min()), int(kept.max())
        self._scale = max(abs(low), abs(high))
        self._range = (low, high)

    # ---------------------------------------------------------------- what Pools gives
    @property
    def groups(self) -> Iterator[SizeGroup]:  # one pass over the files each time
        return self._groups()

    @property
    def min_size(self) -> int:
        return self._min

    @property
    def max_size(self) -> int:
        return self._max

    @property
    def reward_scale(self) -> float:
        return self._scale

    @property
    def reward_range(self) -> tuple[float, float]:
        """Smallest and largest true reward of the whole table (not only of a subset's prompts:
        a bound, which is all it is used for)."""
        return self._range

    def _kept(self) -> IntArray:
        """Global positions of the prompts in this view."""
        return np.arange(self.sizes.size) if self.selection is None else np.flatnonzero(self.selection >= 0)

    def size_counts(self) -> list[tuple[int, int]]:
        sizes, counts = np.unique(self.sizes[self._kept()], return_counts=True)
        return [(int(m), int(c)) for m, c in zip(sizes, counts, strict=True)]

    def reference_sum(self) -> float:
        kept = self._kept()
        return float((self.true_sums[kept] / self.sizes[kept]).sum())

    def with_extras(self, extras: Sequence[str]) -> StreamedPools:
        """The same view, also carrying ``extras``."""
        view = object.__new__(StreamedPools)
        view.__dict__.update(self.__dict__)
        view.extras = tuple(dict.fromkeys([*self.extras, *extras]))
        return view

    def with_shared(self, shared: SharedValues) -> StreamedPools:
        """The same view, keeping ``shared`` (see :class:`hedgetune.pools.SharedValues`)."""
        view = object.__new__(StreamedPools)
        view.__dict__.update(self.__dict__)
        object.__setattr__(view, "shared", shared)
        return view

    def subset(self, prompts: IntArray) -> StreamedPools:
        """The same files restricted to the prompts at these positions (in that order), as
        :meth:`RewardTable.subset` does for a table in memory."""
        index = np.asarray(prompts, dtype=np.intp)
        base = np.arange(self.sizes.size) if self.selection is None else np.flatnonzero(self.selection >= 0)[
            np.argsort(self.selection[self.selection >= 0])
        ]
        chosen = base[index]  # global positions, in the requested order
        selection = np.full(self.sizes.size, -1, dtype=np.intp)
        selection[chosen] = np.arange(chosen.size)
        view = object.__new__(StreamedPools)
        view.__dict__.update(self.__dict__)
        view.selection = selection
        kept = self.sizes[chosen]
        object.__setattr__(view, "n_prompts", int(chosen.size))
        view._min, view._max = int(kept.min()), int(kept.max())
        return view

    # ---------------------------------------------------------------- reading
    def _recorded_proxy(self) -> str:
        import pyarrow.parquet as pq

        from .io import read_metadata

        metadata = read_metadata(pq.read_schema(self.files[0]).metadata)
        proxy = metadata.get("proxy")
        if not proxy:
            raise TableError("name the proxy: the files record no default proxy")
        return str(proxy)

    def _batches(self, columns: list[str]) -> Iterator[Any]:
        import pyarrow.parquet as pq

        for file in self.files:
            handle = pq.ParquetFile(file)
            missing = [c for c in columns if c not in handle.schema_arrow.names]
            if missing:
                raise TableError(f"{file.name} lacks the column(s) {missing}")
            yield from handle.iter_batches(batch_size=self.batch_rows, columns=columns)

    def _survey(self, proxy: str) -> tuple[IntArray, float, float]:
        """Pool sizes in file order (refusing a prompt split across the files), and the true
        rewards' range, reading only those columns."""
        runs: list[int] = []
        sums: list[float] = []  # each prompt's sum of true rewards
        seen: set[Any] = set()
        current: Any = None
        low, high = np.inf, -np.inf
        for batch in self._batches([self.prompt_col, self.true_col, proxy]):
            ids = batch.column(0).to_numpy(zero_copy_only=False)
            true = np.asarray(batch.column(1).to_numpy(zero_copy_only=False), dtype=float)
            if true.size:
                low, high = min(low, float(np.nanmin(true))), max(high, float(np.nanmax(true)))
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            lengths = np.diff(np.r_[starts, ids.size])
            totals = np.add.reduceat(true, starts) if true.size else np.zeros(0)
            for start, length, total in zip(starts, lengths, totals, strict=True):
                key = ids[start].item() if hasattr(ids[start], "item") else ids[start]
                if key == current:
                    runs[-1] += int(length)
                    sums[-1] += float(total)
                    continue
                if key in seen:
                    raise TableError(
                        f"prompt {key!r} appears in two places of the files: a streamed table needs each "
                        "prompt's responses together (sort the rows by prompt)"
                    )
                seen.add(key)
                runs.append(int(length))
                sums.append(float(total))
                current = key
        if not runs:
            raise TableError("the streamed table has no rows")
        self.true_sums = np.array(sums)
        return np.array(runs, dtype=np.intp), low, high

    def chunks(self) -> Iterator[tuple[int, RewardTable]]:
        """``(first global prompt, table of up to chunk_prompts whole prompts)``, in file order."""
        import pyarrow as pa

        from .io import from_arrow

        columns = [self.prompt_col, self.proxy_name, *[c for c in self.extras if c != self.proxy_name], self.true_col]
        columns = list(dict.fromkeys(columns))
        proxies = [c for c in columns if c not in (self.prompt_col, self.true_col) and c != "pairwise_similarity"]
        ends = np.cumsum(self.sizes)  # global row after each prompt
        pending: list[Any] = []
        pending_rows, row, prompt = 0, 0, 0
        for batch in self._batches(columns):
            pending.append(batch)
            pending_rows += batch.num_rows
            row += batch.num_rows
            complete = int(np.searchsorted(ends, row, side="right"))  # prompts whose rows have all arrived
            while complete - prompt >= self.chunk_prompts or (complete == self.sizes.size and complete > prompt):
                take = min(self.chunk_prompts, complete - prompt)
                start_row = int(ends[prompt - 1]) if prompt else 0
                stop_row = int(ends[prompt + take - 1])
                joined = pa.Table.from_batches(pending)
                offset = row - pending_rows  # global row of joined's first row
                piece = joined.slice(start_row - offset, stop_row - start_row)
                yield prompt, from_arrow(piece, prompt_col=self.prompt_col, proxy_col=proxies, true_col=self.true_col)
                rest = joined.slice(stop_row - offset)
                pending, pending_rows = rest.to_batches(), rest.num_rows
                prompt += take

    def _groups(self) -> Iterator[SizeGroup]:
        for first, table in self.chunks():
            global_positions = first + np.arange(table.n_prompts)
            if self.selection is not None:
                positions = self.selection[global_positions]
                keep = np.flatnonzero(positions >= 0)
                if keep.size == 0:
                    continue
                table, global_positions = table.subset(keep), positions[keep]
            for group in build_pools(table, self.proxy_name, self.extras).groups:
                yield replace(group, prompts=global_positions[group.prompts])

    def to_table(self) -> RewardTable:
        """The whole table in memory (what :func:`hedgetune.read_table` of the folder gives)."""
        from .io import read_table

        return read_table(self.path, proxy_col=None)


def scan_table(
    path: str | os.PathLike[str],
    proxy: str | None = None,
    *,
    chunk_prompts: int = 1000,
    extras: Sequence[str] = (),
) -> StreamedPools:
    """A Parquet table (a file, or a folder of ``*.parquet`` as the pipeline writes) to stream:
    pass it to :func:`hedgetune.curve`, :func:`hedgetune.tune` or :func:`hedgetune.evaluate`
    instead of a table; ``chunk_prompts`` whole prompts are held in memory at a time."""
    return StreamedPools(path, proxy, chunk_prompts=chunk_prompts, extras=extras)


__all__ = ["StreamedPools", "parquet_files", "scan_table"]
