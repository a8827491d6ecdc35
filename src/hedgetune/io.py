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
from ._input import (
    MAX_COLUMNS,
    bounded_source,
    check_json_lines,
    parquet_files,
    read_bounded,
    refuse_large,
    require_regular_file,
)
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
    require_regular_file(path)
    if fmt == "npz":
        return _read_npz(path, prompt_col, proxy_col, true_col, group_col, invalid)
    table = _read_arrow(path, fmt, prompt_col)
    return from_arrow(
        table,
        prompt_col=prompt_col,
        proxy_col=proxy_col,
        true_col=true_col,
        group_col=group_col,
        response_col=response_col,
        invalid=invalid,
    )


def _read_arrow(path: str | os.PathLike[str], fmt: str, prompt_col: str = "prompt_id") -> Any:
    """Read a Parquet, CSV or JSONL file into a ``pyarrow.Table``; a file that is not what its
    name or ``format`` says gets one clear line, never a parser's raw dump. Sizes are bounded
    before they are allocated and JSON nesting before it is parsed (:mod:`hedgetune._input`);
    a CSV's prompt ids are read as written (:func:`_ids_as_written`)."""
    import pyarrow as pa

    if fmt not in ("parquet", "csv", "jsonl"):
        raise TableError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if Path(path).is_dir():
        if fmt != "parquet":
            raise TableError(f"{str(path)!r} is a folder: only a folder of Parquet files can be read")
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
            return _read_parquet(Path(path))
        if fmt == "csv":
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(column_types={prompt_col: pa.string()})
            table = pacsv.read_csv(bounded_source(path), convert_options=options)
            names = table.column_names
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise TableError(f"the CSV header of {str(path)!r} names {repeated[0]!r} twice: each column needs its own name")
            refuse_columns(len(names), path)
            return _ids_as_written(table, prompt_col)
        import pyarrow.json as pajson

        data = read_bounded(path)  # the nesting scan needs the bytes
        block = check_json_lines(data, path)
        return pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=block))
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise TableError(f"cannot read {str(path)!r} as {fmt}: {_one_line(str(exc))}") from None


def _ids_as_written(table: Any, prompt_col: str) -> Any:
    """A CSV's prompt ids are text as written: ``0`` and ``00`` are two prompts, never merged by
    a guess at their type. When every id is a whole number written plainly (no sign but ``-``, no
    leading zero, fits 64 bits), they become integers, the same prompts either way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if prompt_col not in table.column_names:
        return table
    ids = table.column(prompt_col)
    plain = pc.match_substring_regex(ids, r"^-?(0|[1-9][0-9]{0,17})$")
    if ids.null_count == 0 and len(ids) and pc.all(plain).as_py():
        position = table.column_names.index(prompt_col)
        return table.set_column(position, prompt_col, ids.cast(pa.int64()))
    return table


def _read_parquet(path: Path) -> Any:
    """One Parquet file, after its footer says its columns and decoded size are within bounds."""
    import pyarrow.parquet as pq

    check_parquet_size([path])
    return pq.read_table(path)


def check_parquet_size(files: Sequence[Path]) -> None:
    """Refuse Parquet files whose footers declare more columns, or more decoded bytes (8 per row
    and column, or the pages' uncompressed size when larger), than the limits allow -- before
    reading any data. (Only row-group totals are read: a corrupt column-chunk entry in a footer
    crashed Arrow's accessor, where reading the file fails cleanly.)"""
    import pyarrow.parquet as pq

    total = 0.0
    for file in files:
        meta = pq.ParquetFile(file).metadata
        refuse_columns(meta.num_columns, file)
        pages = sum(float(meta.row_group(g).total_byte_size) for g in range(meta.num_row_groups))
        total += max(pages, 8.0 * meta.num_rows * meta.num_columns)
    refuse_large(total, files[0] if len(files) == 1 else files[0].parent, "decodes to")


def refuse_columns(count: int, path: str | os.PathLike[str]) -> None:
    if count > MAX_COLUMNS:
        raise TableError(f"{str(path)!r} has {count} columns, more than the {MAX_COLUMNS} a table may have")


def _concat_parquet(files: Sequence[Path]) -> Any:
    """The files of a Parquet folder as one table. Their schemas must agree up to widening (a
    float32 shard joins float64 ones as float64); the first file's hedgetune metadata is kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        check_parquet_size(files)
        parts = [pq.read_table(file) for file in files]
        metadata = parts[0].schema.metadata
        joined = pa.concat_tables([p.replace_schema_metadata(None) for p in parts], promote_options="permissive")
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

    metadata = read_metadata(table.schema.metadata)
    proxies = as_str_list(proxy_col) or metadata.get("proxies") or ["proxy_reward"]
    if group_col is None and metadata.get("group"):
        group_col = "group"
    if true_col == "true_reward" and metadata.get("proxies") and not metadata.get("true"):
        true_col = None
    wanted = [prompt_col, *proxies] + [c for c in (true_col, group_col, response_col) if c]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise TableError(f"missing column(s) {missing}; the table has {table.column_names}")

    table, similarity = _to_long_form(table, wanted, prompt_col, [c for c in [*proxies, true_col, response_col] if c], group_col)
    prompt_values = _check_ids(table.column(prompt_col), prompt_col)
    # Arrow converts each column in C++ without the GIL: the columns convert at once, on threads.
    names = [*proxies, *([true_col] if true_col else [])]
    with ThreadPoolExecutor(min(available_cores(), len(names) + 1)) as pool:
        ids = pool.submit(lambda: np.asarray(prompt_values.to_numpy(zero_copy_only=False)))
        converted = dict(zip(names, pool.map(lambda name: _numeric(table, name), names), strict=True))  # the first bad column raises
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


def _to_long_form(
    table: Any, wanted: list[str], prompt_col: str, value_cols: list[str], group_col: str | None
) -> tuple[Any, Any]:
    """The table in long form (a wide table's list columns expanded, one row per response) and
    its ``pairwise_similarity`` column (long tables only), checked."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for c in wanted:  # fixed-size lists are lists of one length
        kind = table.schema.field(c).type
        if pa.types.is_fixed_size_list(kind):
            table = table.set_column(table.column_names.index(c), c, table.column(c).cast(pa.list_(kind.value_type)))
    list_cols = [c for c in wanted if pa.types.is_list(table.schema.field(c).type) or pa.types.is_large_list(table.schema.field(c).type)]
    if not list_cols:
        return table, _similarity(table)
    not_lists = [c for c in value_cols if c not in list_cols]
    if not_lists:
        raise TableError(f"wide tables need list columns for every per-response value; {not_lists} are not lists")
    lengths = _list_lengths(table, value_cols[0], prompt_col)
    for c in value_cols[1:]:
        if not np.array_equal(lengths, _list_lengths(table, c, prompt_col)):
            raise TableError(f"list columns {value_cols[0]!r} and {c!r} have different lengths in some rows")
    columns = {c: pc.list_flatten(table.column(c)) for c in value_cols}
    repeat = pa.array(np.repeat(np.arange(table.num_rows), lengths))
    columns[prompt_col] = table.column(prompt_col).take(repeat)
    if group_col:
        columns[group_col] = table.column(group_col).take(repeat)
    return pa.table(columns), None


def _similarity(table: Any) -> Any:
    """A long table's ``pairwise_similarity`` column (one list of numbers per response), or None."""
    import pyarrow as pa

    if "pairwise_similarity" not in table.column_names:
        return None
    field_type = table.schema.field("pairwise_similarity").type
    if not (pa.types.is_list(field_type) or pa.types.is_large_list(field_type)):
        raise TableError(f"column 'pairwise_similarity' must hold one list of numbers per response, got {field_type}")
    if not (pa.types.is_floating(field_type.value_type) or pa.types.is_integer(field_type.value_type)):
        raise TableError(f"column 'pairwise_similarity' must hold numbers, got lists of {field_type.value_type}")
    return table.column("pairwise_similarity").combine_chunks()


def _numeric(table: Any, name: str) -> np.ndarray:
    """A column as float64 values (numbers, booleans or nulls only)."""
    import pyarrow as pa

    column = table.column(name)
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_null(kind) or pa.types.is_decimal(kind)):
        raise TableError(f"column {name!r} must be numeric, got {column.type}")
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    # Arrow hands over a read-only view of its buffer (one chunk) or a fresh array (several
    # chunks, other types): the table takes the fresh ones as they are.
    return values if values.flags.writeable else flat_copy(values)


def from_pandas(frame: Any, **columns: Any) -> RewardTable:
    """A table from a pandas DataFrame in long form (column arguments as in :func:`from_arrow`)."""
    import pyarrow as pa

    return from_arrow(pa.Table.from_pandas(frame, preserve_index=False), **columns)


def _list_lengths(table: Any, column: str, prompt_col: str) -> np.ndarray:
    """Each wide row's list length; a missing or empty list (a prompt without responses) is
    refused by its prompt id, never dropped."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(table.column(column))
    empty = pc.or_kleene(pc.is_null(lengths), pc.equal(pc.fill_null(lengths, 0), 0))
    if pc.any(empty).as_py():
        row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise TableError(
            f"wide row {row} (prompt {table.column(prompt_col)[row].as_py()!r}) has no responses in "
            f"{column!r} (a missing or empty list): drop the prompt or give its responses"
        )
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)


def _check_ids(ids: Any, prompt_col: str) -> Any:
    """Prompt ids are numbers or text, none missing and none NaN (NaN would make its rows one prompt)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = ids.type
    if pa.types.is_dictionary(kind):
        ids, kind = ids.cast(kind.value_type), kind.value_type
    if not (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
        or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    ):
        raise TableError(f"column {prompt_col!r} must hold prompt ids as numbers or text, got {kind}")
    if ids.null_count:
        raise TableError(f"column {prompt_col!r} has {ids.null_count} missing prompt ids")
    if pa.types.is_floating(kind):
        nan = pc.sum(pc.is_nan(ids)).as_py() or 0
        if nan:
            raise TableError(f"column {prompt_col!r} has {nan} NaN prompt ids: give every prompt an id")
    return ids


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
            members = _npz_members(archive, str(path))
            missing = [c for c in wanted if c not in members]
            if missing:
                raise TableError(f"missing array(s) {missing}; the file has {sorted(members)}")
            names = [*wanted, *(["prompt_id"] if "prompt_id" in members and prompt_col == "prompt_id" else [])]
            declared = 0.0
            for name in names:
                declared += _npy_payload_bytes(archive, members[name], str(path))
            refuse_large(declared, path, "its arrays hold")
            require_memory(declared, f"the arrays of {str(path)!r}", itemsize=1)
            arrays = {name: _read_member(archive, members[name], str(path)) for name in names}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise TableError(f"{str(path)!r} is a truncated or corrupt .npz archive ({exc})") from None
    ids_name = prompt_col if prompt_col in arrays else None
    return RewardTable.from_arrays(
        {name: arrays[name] for name in proxies},
        None if true_col is None else arrays[true_col],
        None if ids_name is None else arrays[ids_name],
        groups=None if group_col is None else arrays[group_col],
        invalid=invalid,
    )


def _npz_members(archive: zipfile.ZipFile, path: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's arrays by name; encrypted members, compression methods Python cannot read
    and names given twice (which one would be read?) are refused."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if info.flag_bits & 0x1:
            raise TableError(f"{path!r}: array {info.filename!r} is encrypted; save the arrays unencrypted (numpy.savez)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            raise TableError(f"{path!r}: array {info.filename!r} uses compression method {info.compress_type}, which cannot be read (numpy.savez_compressed writes a readable one)")
        if name in members:
            raise TableError(f"{path!r} holds two arrays named {name!r}: which one is meant? Save each name once")
        members[name] = info
    return members


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


def read_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The hedgetune metadata of an Arrow schema (``schema.metadata``: the proxies, the default
    proxy, provenance), checked: a hint must not crash the reader or be trusted. Empty when the
    file was not written by hedgetune."""
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

