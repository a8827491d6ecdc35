"""Reading and writing calibration tables: Parquet, CSV, JSONL (long or wide) and ``.npz``.

Long form has one row per response (columns: prompt id, proxy reward(s), true reward, optional
group and response id). Wide form has one row per prompt with list columns, as public
reward-model overoptimisation datasets store ``proxy_scores`` / ``gold_scores``. ``.npz`` files
hold ``[prompts, samples]`` arrays named like the columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, remove_stale_temporaries
from .table import InvalidPolicy, RewardTable, TableError, as_str_list

_METADATA_KEY = b"hedgetune"
FORMATS = ("parquet", "csv", "jsonl", "npz")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The table format implied by a file name (``.gz`` allowed for CSV and JSONL)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in (
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".json", "jsonl"),
        (".ndjson", "jsonl"),
        (".npz", "npz"),
    ):
        if name.endswith(suffix):
            return fmt
    raise TableError(
        f"cannot tell the format of {str(path)!r}; name it .parquet, .csv, .jsonl or .npz, or pass format="
    )


def read_table(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    prompt_col: str = "prompt_id",
    proxy_col: str | Sequence[str] | None = None,
    true_col: str | None = "true_reward",
    group_col: str | None = None,
    response_col: str | None = None,
    invalid: InvalidPolicy = "raise",
) -> RewardTable:
    """Read a calibration table from a file.

    ``proxy_col`` names one proxy column or several (the first is the default proxy); left out, it
    is every proxy a hedgetune-written Parquet file records, else ``"proxy_reward"``.
    ``true_col=None`` reads a table without ground truth (for selection only). Columns that are
    lists (wide form: one row per prompt) are expanded to one row per response.
    """
    fmt = format or detect_format(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"no such table: {str(path)!r}")
    if fmt == "npz":
        return _read_npz(path, prompt_col, proxy_col, true_col, group_col, invalid)
    import pyarrow as pa

    table: pa.Table
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    elif fmt == "jsonl":
        import pyarrow.json as pajson

        table = pajson.read_json(path)
    else:
        raise TableError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    return from_arrow(
        table,
        prompt_col=prompt_col,
        proxy_col=proxy_col,
        true_col=true_col,
        group_col=group_col,
        response_col=response_col,
        invalid=invalid,
    )


def from_arrow(
    table: Any,
    *,
    prompt_col: str = "prompt_id",
    proxy_col: str | Sequence[str] | None = None,
    true_col: str | None = "true_reward",
    group_col: str | None = None,
    response_col: str | None = None,
    invalid: InvalidPolicy = "raise",
) -> RewardTable:
    """Build a :class:`RewardTable` from a ``pyarrow.Table`` in long or wide form.

    Column arguments as in :func:`read_table`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    metadata = _read_metadata(table.schema.metadata)
    proxies = as_str_list(proxy_col) or metadata.get("proxies") or ["proxy_reward"]
    if group_col is None and metadata.get("group"):
        group_col = "group"
    if true_col == "true_reward" and metadata.get("proxies") and not metadata.get("true"):
        true_col = None
    wanted = [prompt_col, *proxies] + [c for c in (true_col, group_col, response_col) if c]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise TableError(f"missing column(s) {missing}; the table has {table.column_names}")

    list_cols = [
        c
        for c in wanted
        if pa.types.is_list(table.schema.field(c).type) or pa.types.is_large_list(table.schema.field(c).type)
    ]
    if list_cols:  # wide form: one row per prompt, list columns of per-response values
        value_cols = [c for c in [*proxies, true_col, response_col] if c]
        not_lists = [c for c in value_cols if c not in list_cols]
        if not_lists:
            raise TableError(
                f"wide tables need list columns for every per-response value; {not_lists} are not lists"
            )
        lengths = pc.list_value_length(table.column(value_cols[0])).to_numpy(zero_copy_only=False)
        for c in value_cols[1:]:
            other = pc.list_value_length(table.column(c)).to_numpy(zero_copy_only=False)
            if not np.array_equal(lengths, other):
                raise TableError(
                    f"list columns {value_cols[0]!r} and {c!r} have different lengths in some rows"
                )
        columns = {c: pc.list_flatten(table.column(c)) for c in value_cols}
        repeat = np.repeat(np.arange(table.num_rows), lengths)
        columns[prompt_col] = table.column(prompt_col).take(pa.array(repeat))
        if group_col:
            columns[group_col] = table.column(group_col).take(pa.array(repeat))
        table = pa.table(columns)

    def numeric(name: str) -> np.ndarray:
        column = table.column(name)
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
            or pa.types.is_null(column.type)
            or pa.types.is_decimal(column.type)
        ):
            raise TableError(f"column {name!r} must be numeric, got {column.type}")
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)

    prompt_values = table.column(prompt_col)
    if prompt_values.null_count:
        raise TableError(f"column {prompt_col!r} has {prompt_values.null_count} missing prompt ids")
    return RewardTable.from_long(
        np.asarray(prompt_values.to_numpy(zero_copy_only=False)),
        {name: numeric(name) for name in proxies},
        None if true_col is None else numeric(true_col),
        groups=None
        if group_col is None
        else np.asarray(table.column(group_col).to_numpy(zero_copy_only=False)),
        response_ids=None
        if response_col is None
        else np.asarray(table.column(response_col).to_numpy(zero_copy_only=False)),
        proxy=metadata.get("proxy") if metadata.get("proxy") in proxies else None,
        invalid=invalid,
        provenance={k: v for k, v in metadata.get("provenance", {}).items() if k in [*proxies, true_col]},
    )


def _read_npz(
    path: str | os.PathLike[str],
    prompt_col: str,
    proxy_col: str | Sequence[str] | None,
    true_col: str | None,
    group_col: str | None,
    invalid: InvalidPolicy,
) -> RewardTable:
    with np.load(path, allow_pickle=False) as data:  # never unpickle what a user hands in
        proxies = as_str_list(proxy_col) or ["proxy_reward"]
        missing = [c for c in [*proxies, *([true_col] if true_col else [])] if c not in data.files]
        if missing:
            raise TableError(f"missing array(s) {missing}; the file has {data.files}")
        arrays = {name: np.asarray(data[name]) for name in proxies}
        true = None if true_col is None else np.asarray(data[true_col])
        ids = np.asarray(data[prompt_col]) if prompt_col in data.files else None
    return RewardTable.from_arrays(arrays, true, ids, invalid=invalid)


def to_arrow(table: RewardTable) -> Any:
    """The table in long form as a ``pyarrow.Table`` (provenance in the schema metadata)."""
    import pyarrow as pa

    columns: dict[str, Any] = {"prompt_id": table.prompt_of_response()}
    if table.groups is not None:
        columns["group"] = np.repeat(table.groups, table.pool_sizes)
    columns.update({name: values for name, values in table.proxies.items()})
    if table.true_reward is not None:
        columns["true_reward"] = table.true_reward
    metadata = {
        "proxy": table.proxy,
        "proxies": table.proxy_names,
        "true": table.true_reward is not None,
        "group": table.groups is not None,
        "provenance": dict(table.provenance),
        "dropped": table.dropped,
    }
    arrow = pa.table({k: pa.array(v) for k, v in columns.items()})
    return arrow.replace_schema_metadata({_METADATA_KEY: json.dumps(metadata).encode()})


def write_table(table: RewardTable, path: str | os.PathLike[str]) -> Path:
    """Write the table to Parquet in long form, atomically (temporary file, fsync, then rename;
    temporary files a killed earlier write left in that folder are removed first)."""
    import pyarrow.parquet as pq

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    with atomic_path(target) as tmp:
        pq.write_table(to_arrow(table), tmp)
    return target


def _read_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    if not metadata or _METADATA_KEY not in metadata:
        return {}
    try:
        value = json.loads(metadata[_METADATA_KEY])
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
