"""A fuzzer of the table readers, in the suite (issue 28): valid Parquet, CSV, gzipped CSV, JSONL
and .npz tables (long and wide), truncated, bit-flipped, with bytes inserted, deleted or zeroed,
and with schema variants. Every file must end in a correct read (exit 0) or exit 2 with one line
-- never a traceback, a hang or a crash. Seeded and bounded: 400 files per format here (2,400 in
a few seconds); runs of 1,500 and 6,000 per format (45,000 files) passed when it was written, after
the one crash they found (Arrow's accessor of a corrupt column-chunk entry, no longer used)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hedgetune.cli import main

PER_FORMAT = 400


def _long(rng: np.random.Generator) -> dict[str, list[object]]:
    ids = np.repeat(np.arange(6), 4)
    return {"prompt_id": ids.tolist(), "proxy_reward": rng.normal(size=ids.size).round(3).tolist(),
            "true_reward": rng.normal(size=ids.size).round(3).tolist()}


def _valid(fmt: str, rng: np.random.Generator) -> bytes:
    data = _long(rng)
    if fmt == "parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.table(data), buffer)
        return buffer.getvalue()
    if fmt == "wide.parquet":
        buffer = io.BytesIO()
        proxy = np.array(data["proxy_reward"]).reshape(6, 4).tolist()
        true = np.array(data["true_reward"]).reshape(6, 4).tolist()
        pq.write_table(pa.table({"prompt_id": list(range(6)), "proxy_reward": proxy, "true_reward": true}), buffer)
        return buffer.getvalue()
    if fmt in ("csv", "csv.gz"):
        lines = ["prompt_id,proxy_reward,true_reward"] + [
            f"{p},{x},{t}" for p, x, t in zip(data["prompt_id"], data["proxy_reward"], data["true_reward"], strict=True)
        ]
        text = ("\n".join(lines) + "\n").encode()
        return gzip.compress(text) if fmt == "csv.gz" else text
    if fmt == "jsonl":
        rows = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
        return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
    buffer = io.BytesIO()
    np.savez(buffer, proxy_reward=np.array(data["proxy_reward"]).reshape(6, 4), true_reward=np.array(data["true_reward"]).reshape(6, 4))
    return buffer.getvalue()


def _mutations(rng: np.random.Generator) -> list[Callable[[bytes], bytes]]:
    def truncate(b: bytes) -> bytes:
        return b[: int(rng.integers(0, len(b)))]

    def flip(b: bytes) -> bytes:
        out = bytearray(b)
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(len(out)))
            out[at] ^= 1 << int(rng.integers(8))
        return bytes(out)

    def insert(b: bytes) -> bytes:
        at = int(rng.integers(len(b) + 1))
        return b[:at] + rng.bytes(int(rng.integers(1, 16))) + b[at:]

    def delete(b: bytes) -> bytes:
        at = int(rng.integers(len(b)))
        return b[:at] + b[at + int(rng.integers(1, 16)) :]

    def zero(b: bytes) -> bytes:
        at, size = int(rng.integers(len(b))), int(rng.integers(1, 64))
        return b[:at] + bytes(min(size, len(b) - at)) + b[at + size :]

    def repeat(b: bytes) -> bytes:
        at, size = int(rng.integers(len(b))), int(rng.integers(1, 64))
        return b[: at + size] + b[at : at + size] + b[at + size :]

    return [truncate, flip, insert, delete, zero, repeat]


def _schema_variants(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid files with a twist in their columns: renamed, retyped, missing, extra, nulls, lists of lists."""
    data = _long(rng)
    variants = []
    for column, values in (
        ("proxy_reward", [str(v) for v in data["proxy_reward"]]),
        ("proxy_reward", [None] * len(data["proxy_reward"])),
        ("prompt_id", [[p] for p in data["prompt_id"]]),
        ("prompt_id", [None, *data["prompt_id"][1:]]),
        ("true_reward", [[[t]] for t in data["true_reward"]]),
        ("extra", [{"a": 1}] * len(data["prompt_id"])),
        ("proxy_reward", [float("inf"), *data["proxy_reward"][1:]]),
    ):
        changed = dict(data)
        changed[column] = values
        buffer = io.BytesIO()
        pq.write_table(pa.table(changed), buffer)
        variants.append(("parquet", buffer.getvalue()))
    variants.append(("csv", b"prompt_id,proxy_reward\n0,1\n0,2\n"))
    variants.append(("jsonl", b'{"prompt_id": 0, "proxy_reward": [1, 2], "true_reward": 1}\n'))
    variants.append(("jsonl", b'[1, 2, 3]\n'))
    variants.append(("csv", b"\xff\xfe\x00p\x00r\n"))
    return variants


FORMATS = ["parquet", "wide.parquet", "csv", "csv.gz", "jsonl", "npz"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_tables_read_correctly_or_fail_in_one_line(fmt: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(FORMATS.index(fmt))
    valid = _valid(fmt, rng)
    mutations = _mutations(rng)
    outcomes = {"read": 0, "refused": 0}
    failures = []
    suffix = ".parquet" if fmt.endswith("parquet") else f".{fmt}"
    for k in range(PER_FORMAT):
        mutate = mutations[k % len(mutations)]
        path = tmp_path / f"f{k}{suffix}"
        path.write_bytes(mutate(valid))
        result = CliRunner().invoke(main, ["info", str(path)])
        lines = result.stderr.strip().splitlines()
        if result.exit_code == 0:
            outcomes["read"] += 1
        elif result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.stderr:
            outcomes["refused"] += 1
        else:
            failures.append((mutate.__name__, result.exit_code, repr(result.exception), result.stderr[-300:]))
    assert not failures, failures[:5]
    assert outcomes["refused"] > 0  # the mutations do reach the readers' checks


def test_schema_variants_read_correctly_or_fail_in_one_line(tmp_path: Path) -> None:
    failures = []
    for k, (fmt, data) in enumerate(_schema_variants(np.random.default_rng(0))):
        path = tmp_path / f"v{k}.{fmt}"
        path.write_bytes(data)
        result = CliRunner().invoke(main, ["info", str(path)])
        ok = result.exit_code == 0 or (result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1)
        if not ok or "Traceback" in result.stderr:
            failures.append((k, fmt, result.exit_code, repr(result.exception), result.stderr[-300:]))
    assert not failures, failures
