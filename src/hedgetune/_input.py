"""Files a user hands in are untrusted: regular files only, their decoded size bounded before it is
allocated, JSON nesting bounded before a recursive parser sees it.

Limits (documented in ``docs/LIMITS.md``; raise them with environment variables):

* ``HEDGETUNE_MAX_INPUT_BYTES`` (default 4 GiB): the most bytes one table may decode to (a gzip's
  decompressed text, a Parquet file's uncompressed column data, an ``.npz``'s arrays);
* :data:`MAX_COLUMNS` columns, :data:`MAX_JSON_DEPTH` levels of JSON nesting (a reward table needs 3).
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._limits import human_bytes
from .errors import TableError

#: Default of ``HEDGETUNE_MAX_INPUT_BYTES``.
DEFAULT_MAX_INPUT_BYTES = 4 << 30
#: Most columns a table file may have.
MAX_COLUMNS = 10_000
#: Deepest nesting of JSON arrays and objects read (a wide row's list of lists is 3 deep).
MAX_JSON_DEPTH = 64
_ENV = "HEDGETUNE_MAX_INPUT_BYTES"


def max_input_bytes() -> int:
    """The most bytes one table may decode to (``HEDGETUNE_MAX_INPUT_BYTES``, default 4 GiB)."""
    value = os.environ.get(_ENV)
    if value is None:
        return DEFAULT_MAX_INPUT_BYTES
    try:
        limit = int(value)
    except ValueError:
        raise TableError(f"{_ENV} must be a whole number of bytes, got {value!r}") from None
    if limit < 1:
        raise TableError(f"{_ENV} must be positive, got {value!r}")
    return limit


def refuse_large(size: float, path: str | os.PathLike[str], what: str) -> None:
    """A :class:`TableError` when ``size`` bytes exceed :func:`max_input_bytes`."""
    limit = max_input_bytes()
    if size > limit:
        raise TableError(
            f"{str(path)!r}: {what} {human_bytes(size)}, over the limit of {human_bytes(limit)} "
            f"(set {_ENV} to read it anyway)"
        )


def require_regular_file(path: str | os.PathLike[str], folder_ok: bool = True) -> os.stat_result:
    """The file's status; a :class:`TableError` for anything but a regular file (or a folder, with
    ``folder_ok``): a FIFO would block the reader forever, a device could be endless."""
    info = os.stat(path)
    if not (stat.S_ISREG(info.st_mode) or (folder_ok and stat.S_ISDIR(info.st_mode))):
        raise TableError(f"{str(path)!r} is not a regular file (a pipe, device or socket): save the table to a file first")
    return info


def read_bounded(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, gunzipped when it is named ``.gz``, refused once they pass the limit."""
    limit = max_input_bytes()
    if not str(path).lower().endswith(".gz"):
        refuse_large(os.stat(path).st_size, path, "the file holds")
        return Path(path).read_bytes()
    parts, total = [], 0
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                total += len(chunk)
                if total > limit:
                    refuse_large(total, path, "decompresses to more than")
                parts.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise TableError(f"{str(path)!r} is a truncated or corrupt gzip file ({exc})") from None
    return b"".join(parts)


def bounded_source(path: str | os.PathLike[str]) -> Any:
    """What a parser should read: a plain file's path once its size is within the limit (the
    parser reads it once), or a gzip's text decompressed within the limit (:func:`read_bounded`)."""
    if str(path).lower().endswith(".gz"):
        import pyarrow as pa

        return pa.BufferReader(read_bounded(path))
    refuse_large(os.stat(path).st_size, path, "the file holds")
    return str(path)


def json_lines_shape(data: bytes, chunk: int = 1 << 26) -> tuple[int, int]:
    """The deepest nesting of arrays and objects outside strings, and the longest line, of JSON
    lines (counting its newline), in one vectorised pass per chunk (no recursion, whatever the input). Up to the first
    byte that is not valid JSON, the string state tracked here is the parser's own, so a file
    cannot hide its depth from this scan and still reach the parser's recursion."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    deepest, depth, in_string, backslashes = 0, 0, False, 0
    longest, line_start = 0, -1  # the newline before the first line
    for start in range(0, buffer.size, chunk):
        c = buffer[start : start + chunk]
        index = np.arange(c.size)
        is_backslash = c == 92
        # Backslashes just before each byte: an odd run escapes a quote.
        last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))
        run = np.empty(c.size, dtype=np.int64)
        run[0] = backslashes
        run[1:] = index[:-1] - last_other[:-1]
        run[1:][last_other[:-1] < 0] += backslashes
        quotes = (c == 34) & (run % 2 == 0)
        parity = np.cumsum(quotes) % 2
        # Inside a string at byte i: the quotes up to and including i, plus the carried state, are odd
        # (an opening quote is itself inside, a closing one outside; neither is a bracket).
        inside = (parity == 1) != in_string
        steps = np.where(inside, 0, (c == 91).astype(np.int64) + (c == 123) - (c == 93) - (c == 125))
        levels = depth + np.cumsum(steps)
        if levels.size:
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
        in_string = bool(inside[-1]) if c.size else in_string
        trailing = c.size - 1 - int(last_other[-1]) if c.size else 0
        backslashes = trailing + (backslashes if c.size and last_other[-1] < 0 else 0)
        newlines = np.flatnonzero(c == 10) + start
        if newlines.size:
            edges = np.concatenate([[line_start], newlines])
            longest = max(longest, int(np.diff(edges).max()))
            line_start = int(newlines[-1])
    longest = max(longest, buffer.size - 1 - line_start)  # a last line without its newline
    return deepest, longest


def check_json_lines(data: bytes, path: str | os.PathLike[str]) -> int:
    """Refuse JSON lines nested deeper than :data:`MAX_JSON_DEPTH`; the block size a line-by-line
    parser needs (the longest line, at least 1 MiB)."""
    depth, longest = json_lines_shape(data)
    if depth > MAX_JSON_DEPTH:
        raise TableError(
            f"{str(path)!r} nests JSON {depth} levels deep (at most {MAX_JSON_DEPTH}; a reward table needs 3)"
        )
    if longest >= 1 << 30:
        raise TableError(f"{str(path)!r} has a line of {human_bytes(longest)}: at most 1 GiB per JSON line")
    return max(1 << 20, longest + 2)


def parquet_files(path: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files of a table: the file itself, or a folder's ``*.parquet`` in name order
    (hidden files, whose names start with a dot -- temporaries, editors' copies -- are not read)."""
    source = Path(path)
    if source.is_dir():
        files = sorted(p for p in source.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no *.parquet files in the folder {str(source)!r}")
        for file in files:  # a pipe or device among them is refused, not skipped
            require_regular_file(file, folder_ok=False)
        return files
    if not source.exists():
        raise FileNotFoundError(f"no such table: {str(source)!r}")
    require_regular_file(source)
    return [source]
