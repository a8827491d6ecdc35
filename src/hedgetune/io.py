"""Reading and writing calibration tables: Parquet, CSV, JSONL (long or wide) and ``.npz``.

Long form has one row per response (columns: prompt id, proxy reward(s), true reward, optional
group and response id). Wide form has one row per prompt with list columns, as public
reward-model overoptimisation datasets store ``proxy_scores`` / ``gold_scores``. ``.npz`` files
hold ``[prompts, samples]`` arrays named like the columns.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, remove_stale_temporaries
from ._limits import available_cores, require_memory
from ._threads import flat_copy
from .table import InvalidPolicy, RewardTable, TableError, as_str_list

_METADATA_KEY = b"hedgetune"
FORMATS = ("parquet", "csv", "jsonl", "npz")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The table format implied by a file name (``.gz`` allowed for CSV and JSONL); a folder is a
    Parquet dataset (its ``*.parquet`` files, as the pipeline writes)."""
    if Path(path).is_dir():
        return "parquet"
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
    table = _read_arrow(path, fmt)
    return from_arrow(
        table,
        prompt_col=prompt_col,
        proxy_col=proxy_col,
        true_col=true_col,
        group_col=group_col,
        response_col=response_col,
        invalid=invalid,
    )


def _read_arrow(path: str | os.PathLike[str], fmt: str) -> Any:
    """Read a Parquet, CSV or JSONL file into a ``pyarrow.Table``; a file that is not what its
    name or ``format`` says gets one clear line, never a parser's raw dump."""
    import pyarrow as pa

    if fmt not in ("parquet", "csv", "jsonl"):
        raise TableError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if Path(path).is_dir():
        if fmt != "parquet":
            raise TableError(f"{str(path)!r} is a folder: only a folder of Parquet files can be read")
        from .streaming import parquet_files

        return _concat_parquet(parquet_files(path))
    with open(path, "rb") as handle:
        head = handle.read(4)
    if fmt != "parquet" and head == b"PAR1":
        raise TableError(f"{str(path)!r} is a Parquet file, not {fmt}: drop --format or pass --format parquet")
    if str(path).lower().endswith(".gz") and head[:2] != b"\x1f\x8b":
        raise TableError(f"{str(path)!r} is named .gz but is not a gzip file")
    if fmt != "parquet" and not head:
        raise TableError(f"{str(path)!r} is empty")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
            names = table.column_names
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise TableError(f"the CSV header of {str(path)!r} names {repeated[0]!r} twice: each column needs its own name")
            return table
        import pyarrow.json as pajson

        return pajson.read_json(path)
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise TableError(f"cannot read {str(path)!r} as {fmt}: {_one_line(str(exc))}") from None


def _concat_parquet(files: Sequence[Path]) -> Any:
    """The files of a Parquet folder as one table (schemas must agree; the first file's hedgetune
    metadata is kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parts = [pq.read_table(file) for file in files]
        metadata = parts[0].schema.metadata
        joined = pa.concat_tables([p.replace_schema_metadata(None) for p in parts])
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise TableError(f"cannot read the Parquet folder: {_one_line(str(exc))}") from None
    return joined.replace_schema_metadata(metadata)


def _one_line(message: str, limit: int = 160) -> str:
    """The first line of a message, printable characters only, cut at ``limit``."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    clean = "".join(c if c.isprintable() else "?" for c in first)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


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
    similarity = None
    if "pairwise_similarity" in table.column_names and not list_cols:
        field_type = table.schema.field("pairwise_similarity").type
        if not (pa.types.is_list(field_type) or pa.types.is_large_list(field_type)):
            raise TableError(f"column 'pairwise_similarity' must hold one list of numbers per response, got {field_type}")
        if not (pa.types.is_floating(field_type.value_type) or pa.types.is_integer(field_type.value_type)):
            raise TableError(f"column 'pairwise_similarity' must hold numbers, got lists of {field_type.value_type}")
        similarity = table.column("pairwise_similarity").combine_chunks()
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
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
        # Arrow hands over a read-only view of its buffer (one chunk) or a fresh array (several
        # chunks, other types): the table takes the fresh ones as they are.
        return values if values.flags.writeable else flat_copy(values)

    prompt_values = table.column(prompt_col)
    if prompt_values.null_count:
        raise TableError(f"column {prompt_col!r} has {prompt_values.null_count} missing prompt ids")
    # Arrow converts each column in C++ without the GIL: the columns convert at once, on threads.
    names = [*proxies, *([true_col] if true_col else [])]
    with ThreadPoolExecutor(min(available_cores(), len(names) + 1)) as pool:
        ids = pool.submit(lambda: np.asarray(prompt_values.to_numpy(zero_copy_only=False)))
        converted = dict(zip(names, pool.map(numeric, names), strict=True))  # the first bad column raises
    return RewardTable.from_long(
        ids.result(),
        {name: converted[name] for name in proxies},
        None if true_col is None else converted[true_col],
        groups=None
        if group_col is None
        else np.asarray(table.column(group_col).to_numpy(zero_copy_only=False)),
        response_ids=None
        if response_col is None
        else np.asarray(table.column(response_col).to_numpy(zero_copy_only=False)),
        proxy=metadata.get("proxy") if metadata.get("proxy") in proxies else None,
        invalid=invalid,
        provenance={
            k: v for k, v in metadata.get("provenance", {}).items() if k in [*proxies, true_col, "pairwise_similarity"]
        },
        pairwise_similarity=similarity,
        _copy=False,  # every column above is an array of its own
    )


def _read_npz(
    path: str | os.PathLike[str],
    prompt_col: str,
    proxy_col: str | Sequence[str] | None,
    true_col: str | None,
    group_col: str | None,
    invalid: InvalidPolicy,
) -> RewardTable:
    """Read ``[prompts, samples]`` arrays from an ``.npz``; never unpickles, and checks every
    array's declared size against the bytes the archive holds before reading it."""
    proxies = as_str_list(proxy_col) or ["proxy_reward"]
    wanted = [*proxies, *([true_col] if true_col else []), *([group_col] if group_col else [])]
    if prompt_col != "prompt_id":  # the default is optional in .npz (rows are then numbered)
        wanted.append(prompt_col)
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise TableError(f"{str(path)!r} is not an .npz archive (a zip of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            missing = [c for c in wanted if c not in members]
            if missing:
                raise TableError(f"missing array(s) {missing}; the file has {sorted(members)}")
            names = [*wanted, *(["prompt_id"] if "prompt_id" in members and prompt_col == "prompt_id" else [])]
            declared = 0.0
            for name in names:
                declared += _npy_payload_bytes(archive, members[name], str(path))
            require_memory(declared, f"the arrays of {str(path)!r}", itemsize=1)
            arrays = {name: _read_member(archive, members[name], str(path)) for name in names}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise TableError(f"{str(path)!r} is a truncated or corrupt .npz archive ({exc})") from None
    ids_name = prompt_col if prompt_col in arrays else None
    return RewardTable.from_arrays(
        {name: arrays[name] for name in proxies},
        None if true_col is None else arrays[true_col],
        None if ids_name is None else arrays[ids_name],
        groups=None if group_col is None else arrays[group_col],
        invalid=invalid,
    )


def _npy_payload_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> float:
    """The bytes an ``.npy`` member's header declares; refuses object arrays and headers that
    declare more data than the member holds (a crafted or truncated file)."""
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as exc:
            raise TableError(f"{path!r}: array {info.filename!r} is not a valid .npy ({exc})") from None
        header_bytes = member.tell()
    if dtype.hasobject:
        raise TableError(f"{path!r}: array {info.filename!r} holds Python objects; only numbers are read")
    declared = float(np.prod(shape, dtype=float)) * dtype.itemsize
    if declared > info.file_size - header_bytes:
        raise TableError(
            f"{path!r}: array {info.filename!r} declares shape {shape} ({declared:.3g} bytes) but "
            f"holds {info.file_size - header_bytes} bytes: the file is corrupt or crafted"
        )
    return declared


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> np.ndarray:
    with archive.open(info) as member:
        try:
            return np.lib.format.read_array(member, allow_pickle=False)  # never unpickle
        except ValueError as exc:
            raise TableError(f"{path!r}: cannot read array {info.filename!r} ({exc})") from None


def to_arrow(table: RewardTable) -> Any:
    """The table in long form as a ``pyarrow.Table`` (provenance in the schema metadata)."""
    import pyarrow as pa

    columns: dict[str, Any] = {"prompt_id": table.prompt_of_response()}
    if table.groups is not None:
        columns["group"] = np.repeat(table.groups, table.pool_sizes)
    columns.update({name: values for name, values in table.proxies.items()})
    if table.true_reward is not None:
        columns["true_reward"] = table.true_reward
    if table.pairwise_similarity is not None:  # each response's similarities to its prompt's responses
        sizes = np.repeat(table.pool_sizes, table.pool_sizes)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32 if table.pairwise_similarity.size < 2**31 else np.int64)
        make = pa.ListArray if bounds.dtype == np.int32 else pa.LargeListArray
        columns["pairwise_similarity"] = make.from_arrays(pa.array(bounds), pa.array(table.pairwise_similarity))
    metadata = {
        "proxy": table.proxy,
        "proxies": table.proxy_names,
        "true": table.true_reward is not None,
        "group": table.groups is not None,
        "provenance": dict(table.provenance),
        "dropped": table.dropped,
    }
    arrow = pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()})
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


#: The hedgetune metadata a Parquet file may carry, and the JSON type of each entry.
_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "proxy": (str, type(None)),
    "proxies": (list,),
    "true": (bool,),
    "group": (bool,),
    "provenance": (dict,),
    "dropped": (int,),
}


def _read_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The file's hedgetune metadata, checked: a hint must not crash the reader or be trusted."""
    if not metadata or _METADATA_KEY not in metadata:
        return {}
    try:
        value = json.loads(metadata[_METADATA_KEY])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise TableError("the file's hedgetune metadata is not valid JSON") from None
    if not isinstance(value, dict):
        raise TableError(f"the file's hedgetune metadata must be a JSON object, got {type(value).__name__}")
    for key, types in _METADATA_TYPES.items():
        if key in value and not isinstance(value[key], types):
            raise TableError(
                f"the file's hedgetune metadata is malformed: {key!r} must be "
                f"{' or '.join(t.__name__ for t in types)}, got {type(value[key]).__name__}"
            )
    if not all(isinstance(name, str) for name in value.get("proxies", [])):
        raise TableError("the file's hedgetune metadata is malformed: 'proxies' must list column names")
    return value


def read_shards(shards: Sequence[Path], what: str, remedy: str = "") -> Any:
    """Parquet shards (a generation run, a gateway log) as one ``pyarrow.Table``; an unreadable
    shard is refused with its name, what it is and ``remedy``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for shard in shards:
        try:
            tables.append(pq.read_table(shard))
        except (OSError, ValueError, pa.ArrowException) as exc:  # the shard is unusable
            raise TableError(f"unreadable {what} {shard.name} ({type(exc).__name__}){remedy}") from None
    return pa.concat_tables(tables)

