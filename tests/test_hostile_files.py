"""Files a user hands in, at their worst (issue 28's reproducers): pipes, bombs, deep JSON, crafted
archives, ids that would merge silently. Each ends in a correct read or exit 2 with one line, fast."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune._input import MAX_JSON_DEPTH, json_lines_shape
from hedgetune.cli import main


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hedgetune ARGS`` in a fresh process (a crash or a hang is seen, not suffered)."""
    return subprocess.run(
        [sys.executable, "-m", "hedgetune.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line_failure(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert fragment.lower() in lines[0].lower(), lines[0]


# ----------------------------------------------------------------------------------- not files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "t.csv"
    os.mkfifo(fifo)
    one_line_failure(cli("info", str(fifo), timeout=30), "not a regular file")
    folder = tmp_path / "shards"
    folder.mkdir()
    ht.write_table(ht.synthetic.make_table("toy", 4, 3, seed=0), folder / "a.parquet")
    os.mkfifo(folder / "b.parquet")
    one_line_failure(cli("info", str(folder), timeout=30), "not a regular file")
    with pytest.raises(ht.TableError, match="not a regular file"):
        ht.scan_table(folder)


# ---------------------------------------------------------------------------------------- bombs
def test_a_gzip_bomb_is_refused_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.csv.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"prompt_id,proxy_reward,true_reward\n")
        handle.write(b"0,1,1\n" * 400_000)  # 2.4 MB of text from a few kB
    assert path.stat().st_size < 50_000
    one_line_failure(cli("info", str(path), env={"HEDGETUNE_MAX_INPUT_BYTES": "1000000"}), "HEDGETUNE_MAX_INPUT_BYTES")
    one_line_failure(cli("info", str(path), env={"HEDGETUNE_MAX_INPUT_BYTES": "lots"}), "whole number")


def test_a_parquet_that_decodes_past_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "runs.parquet"
    n = 300_000  # constant rewards: under 1.5 MB on disk, 7 MB decoded
    pq.write_table(pa.table({"prompt_id": np.repeat(np.arange(n // 3), 3), "proxy_reward": np.ones(n), "true_reward": np.ones(n)}), path)
    assert path.stat().st_size < 1_500_000  # (the ids take most of it)
    one_line_failure(cli("info", str(path), env={"HEDGETUNE_MAX_INPUT_BYTES": "2000000"}), "decodes to")
    assert cli("info", str(path)).returncode == 0  # within the default limit


def test_an_npz_whose_arrays_pass_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    np.savez_compressed(path, proxy_reward=np.zeros((1000, 500)), true_reward=np.zeros((1000, 500)))
    one_line_failure(cli("info", str(path), env={"HEDGETUNE_MAX_INPUT_BYTES": "4000000"}), "its arrays hold")


# ------------------------------------------------------------------------------------- deep JSON
def test_deep_json_is_refused_without_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt_id":0,"proxy_reward":1,"true_reward":1,"x":' + "[" * 50_000 + "]" * 50_000 + "}\n")
    one_line_failure(cli("info", str(path)), "levels deep")


def _depth_by_parser(text: str) -> int:
    def depth(value: object) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    return max(depth(json.loads(line)) for line in text.splitlines() if line.strip())


def test_the_depth_scan_agrees_with_a_parser() -> None:
    """Random documents with brackets, quotes and backslashes inside strings (scanned in tiny
    chunks, so every carry between chunks is exercised)."""
    rng = np.random.default_rng(0)
    atoms = ['"a"', '"[["', '"\\\\"', '"\\"]"', '"{\\\\\\"["', "1", "null", '"\\\\\\\\"']

    def document(level: int) -> object:
        if level > 6 or rng.random() < 0.3:
            return json.loads(atoms[rng.integers(len(atoms))])
        if rng.random() < 0.5:
            return [document(level + 1) for _ in range(rng.integers(0, 3))]
        return {f"k{i}\\[": document(level + 1) for i in range(rng.integers(0, 3))}

    for _ in range(60):
        text = "\n".join(json.dumps({"v": document(0)}) for _ in range(3)) + "\n"
        for chunk in (1, 3, 7, 1 << 20):
            depth, longest = json_lines_shape(text.encode(), chunk=chunk)
            assert depth == _depth_by_parser(text)
            assert longest == max(len(line) + 1 for line in text.splitlines())


def test_long_json_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    rows = [{"prompt_id": p, "proxy_reward": float(k), "true_reward": 1.0, "response": "x" * 1_500_000 if p == 0 else "y"} for p in range(2) for k in range(2)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = ht.read_table(path)
    assert table.n_prompts == 2
    assert MAX_JSON_DEPTH >= 3


# -------------------------------------------------------------------------------------- archives
def _npz_with(tmp_path: Path, name: str, edit: object) -> Path:
    path = tmp_path / name
    np.savez(path, proxy_reward=np.array([[1.0, 2.0], [3.0, 4.0]]), true_reward=np.array([[1.0, 0.0], [0.0, 1.0]]))
    data = bytearray(path.read_bytes())
    edit(data)  # type: ignore[operator]
    path.write_bytes(bytes(data))
    return path


def _set_in_every_header(data: bytearray, offset_local: int, offset_central: int, value: int) -> None:
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset : at + offset + 2] = value.to_bytes(2, "little")
            at = data.find(signature, at + 4)


def test_crafted_archives_are_refused_by_name(tmp_path: Path) -> None:
    encrypted = _npz_with(tmp_path, "enc.npz", lambda d: _set_in_every_header(d, 6, 8, 1))
    one_line_failure(cli("info", str(encrypted)), "encrypted")
    method = _npz_with(tmp_path, "aes.npz", lambda d: _set_in_every_header(d, 8, 10, 99))
    one_line_failure(cli("info", str(method)), "compression method 99")
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(twice, "w") as archive:
        for values in ([[1.0, 2.0]], [[5.0, 6.0]]):
            buffer = io.BytesIO()
            np.save(buffer, np.array(values))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zipfile warns of the duplicate name: the point here
                archive.writestr("proxy_reward.npy", buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, np.array([[1.0, 0.0]]))
        archive.writestr("true_reward.npy", buffer.getvalue())
    one_line_failure(cli("info", str(twice)), "two arrays named 'proxy_reward'")


# ----------------------------------------------------------------------------------------- ids
def test_csv_ids_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    rows = ["prompt_id,proxy_reward,true_reward"]
    for pid in ("0", "00", "1", "01", "001", "1.0"):
        rows += [f"{pid},1,1", f"{pid},2,0"]
    path.write_text("\n".join(rows) + "\n")
    table = ht.read_table(path)
    assert table.n_prompts == 6  # never merged by a guess at their type
    assert sorted(map(str, table.prompt_ids)) == sorted(["0", "00", "1", "01", "001", "1.0"])
    plain = tmp_path / "plain.csv"
    plain.write_text("prompt_id,proxy_reward,true_reward\n7,1,1\n7,2,0\n-3,1,0\n-3,5,1\n")
    ids = ht.read_table(plain).prompt_ids
    assert ids.dtype.kind == "i" and sorted(ids.tolist()) == [-3, 7]  # whole numbers written plainly stay numbers


def test_nan_and_struct_ids_are_refused(tmp_path: Path) -> None:
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"prompt_id": [0.0, 0.0, np.nan, np.nan], "proxy_reward": [1.0, 2, 3, 4], "true_reward": [1.0, 0, 1, 0]}), nan)
    one_line_failure(cli("info", str(nan)), "NaN prompt ids")
    struct = tmp_path / "struct.parquet"
    pq.write_table(pa.table({"prompt_id": [{"a": 1}, {"a": 1}], "proxy_reward": [1.0, 2], "true_reward": [1.0, 0]}), struct)
    one_line_failure(cli("info", str(struct)), "numbers or text")


# ------------------------------------------------------------------------------------- wide rows
def test_a_wide_row_without_responses_is_refused_by_its_prompt(tmp_path: Path) -> None:
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"prompt_id": ["a", "b", "c"], "proxy_reward": [[1.0, 2.0], [], [3.0, 1.0]], "true_reward": [[1.0, 0.0], [], [0.0, 1.0]]}), path)
    one_line_failure(cli("info", str(path)), "prompt 'b'")


def test_fixed_size_lists_read_as_lists(tmp_path: Path) -> None:
    lists = pa.table({"prompt_id": [0, 1], "proxy_reward": [[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]], "true_reward": [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]})
    fixed = pa.table({name: (column.cast(pa.list_(pa.float64(), 3)) if name != "prompt_id" else column) for name, column in zip(lists.column_names, lists.columns, strict=True)})
    pq.write_table(lists, tmp_path / "lists.parquet")
    pq.write_table(fixed, tmp_path / "fixed.parquet")
    a, b = ht.read_table(tmp_path / "lists.parquet"), ht.read_table(tmp_path / "fixed.parquet")
    np.testing.assert_array_equal(a.proxies["proxy_reward"], b.proxies["proxy_reward"])
    np.testing.assert_array_equal(a.true_reward, b.true_reward)


def test_a_folder_mixing_float32_and_float64_shards_is_read(tmp_path: Path) -> None:
    for name, dtype in (("a", np.float64), ("b", np.float32)):
        pq.write_table(pa.table({"prompt_id": np.repeat([0, 1], 2) + (0 if name == "a" else 2),
                                 "proxy_reward": np.arange(4, dtype=dtype), "true_reward": np.ones(4, dtype=dtype)}), tmp_path / f"{name}.parquet")
    table = ht.read_table(tmp_path)
    assert table.n_prompts == 4
    result = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_non_text_provenance_is_refused_by_every_command(tmp_path: Path) -> None:
    """Issue 28, item 16: provenance values that are not text crashed `report` only."""
    rng = np.random.default_rng(0)
    table = pa.table({"prompt_id": np.repeat(np.arange(10), 4), "proxy_reward": rng.normal(size=40), "true_reward": rng.normal(size=40)})
    meta = {"proxies": ["proxy_reward"], "true": True, "provenance": {"proxy_reward": 5}}
    path = tmp_path / "prov.parquet"
    pq.write_table(table.replace_schema_metadata({b"hedgetune": json.dumps(meta).encode()}), path)
    one_line_failure(cli("info", str(path)), "provenance must map column names to text")
    one_line_failure(cli("report", str(path), "--out", str(tmp_path / "r"), "--bootstrap", "10", "--repeats", "2"), "provenance")
    with pytest.raises(ht.TableError, match="provenance"):
        ht.RewardTable.from_long([0, 0], {"rm": [1.0, 2.0]}, [1.0, 0.0], provenance={"rm": 3})  # type: ignore[dict-item]
