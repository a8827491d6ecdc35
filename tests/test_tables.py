"""Calibration tables: constructors, readers, writers and validation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import hedgetune as ht


def _long_rows() -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    rows = []
    for p in range(5):
        for s in range(3 + p % 2):
            rows.append(
                {
                    "prompt_id": f"p{p}",
                    "sample": s,
                    "task": "math" if p < 3 else "chat",
                    "rm": float(rng.normal()),
                    "len": float(rng.integers(5, 50)),
                    "gold": float(rng.random()),
                }
            )
    return rows


def _assert_same(a: ht.RewardTable, b: ht.RewardTable) -> None:
    np.testing.assert_array_equal(a.prompt_ids.astype(str), b.prompt_ids.astype(str))
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.proxy_names == b.proxy_names
    for name in a.proxy_names:
        np.testing.assert_array_equal(a.proxies[name], b.proxies[name])
    np.testing.assert_array_equal(a.true_reward, b.true_reward)  # type: ignore[arg-type]
    if a.groups is not None:
        np.testing.assert_array_equal(a.groups.astype(str), b.groups.astype(str))  # type: ignore[union-attr]


COLUMNS = {"proxy_col": ["rm", "len"], "true_col": "gold", "group_col": "task", "response_col": "sample"}


def _roundtrip(table: ht.RewardTable, tmp_path: Path) -> None:
    path = ht.write_table(table, tmp_path / "out" / "table.parquet")
    again = ht.read_table(path)
    _assert_same(table, again)
    assert again.proxy == table.proxy
    assert dict(again.provenance) == dict(table.provenance)


def test_long_jsonl_csv_parquet_agree_and_roundtrip(tmp_path: Path) -> None:
    rows = _long_rows()
    jsonl = tmp_path / "t.jsonl.gz"
    with gzip.open(jsonl, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    arrow = pa.Table.from_pylist(rows)
    csv = tmp_path / "t.csv"
    pacsv.write_csv(arrow, csv)
    import pyarrow.parquet as pq

    parquet = tmp_path / "t.parquet"
    pq.write_table(arrow, parquet)
    tables = [ht.read_table(p, **COLUMNS) for p in (jsonl, csv, parquet)]  # type: ignore[arg-type]
    for t in tables[1:]:
        _assert_same(tables[0], t)
    t = tables[0]
    assert t.n_prompts == 5 and t.n_responses == 17
    assert t.pool_sizes.tolist() == [3, 4, 3, 4, 3]
    assert t.groups.tolist() == ["math", "math", "math", "chat", "chat"]  # type: ignore[union-attr]
    _roundtrip(t, tmp_path)
    frame = arrow.to_pandas()
    _assert_same(t, ht.from_pandas(frame, **COLUMNS))


def test_wide_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    rows = [
        {"prompt_id": i, "proxy_scores": [0.1 * i, 0.5, -1.0], "gold_scores": [1.0, 0.0, 0.5]}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = ht.read_table(path, proxy_col="proxy_scores", true_col="gold_scores")
    assert t.n_prompts == 4 and t.pool_sizes.tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(t.true_reward[:3], [1.0, 0.0, 0.5])  # type: ignore[index]
    _roundtrip(t, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt_id": 0, "proxy_scores": [1.0, 2.0], "gold_scores": [1.0]}) + "\n")
    with pytest.raises(ht.TableError, match="different lengths"):
        ht.read_table(bad, proxy_col="proxy_scores", true_col="gold_scores")


def test_npz_and_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=(6, 4)), rng.random((6, 4))
    proxy[2, 3] = gold[2, 3] = np.nan  # a ragged pool: padding is NaN in every column
    path = tmp_path / "t.npz"
    np.savez(path, proxy_reward=proxy, true_reward=gold)
    t = ht.read_table(path)
    assert t.pool_sizes.tolist() == [4, 4, 3, 4, 4, 4]
    _assert_same(t, ht.RewardTable.from_arrays(proxy, gold))
    _roundtrip(t, tmp_path)
    obj = tmp_path / "obj.npz"
    np.savez(obj, proxy_reward=np.array([[{"a": 1}]], dtype=object), true_reward=gold)
    with pytest.raises(ValueError, match="holds Python objects"):
        ht.read_table(obj)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"proxy_col": "nope", "true_col": "gold"}, ht.TableError, r"missing column\(s\) \['nope'\]"),
        ({"true_col": "task", "proxy_col": "rm"}, ht.TableError, "'task' must be numeric"),
        (
            {"proxy_col": "rm", "true_col": "gold", "group_col": "sample"},
            ht.TableError,
            "constant within each prompt",
        ),
    ],
)
def test_bad_columns(tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(_long_rows()), path)
    with pytest.raises(error, match=match):
        ht.read_table(path, **kwargs)  # type: ignore[arg-type]


def test_invalid_values_policy() -> None:
    proxy = np.array([[0.1, np.inf, 0.3], [1.0, 2.0, 3.0]])
    true = np.array([[1.0, 2.0, np.nan], [0.0, 1.0, 0.0]])
    with pytest.raises(ht.TableError, match="2 responses have NaN or infinite rewards"):
        ht.RewardTable.from_arrays(proxy, true)
    with pytest.warns(UserWarning, match="dropped 2 responses"):
        with pytest.raises(ht.TableError, match="fewer than two responses"):
            ht.RewardTable.from_arrays(proxy, true, invalid="drop")
    proxy[0, 0] = 0.5
    true[0, 0] = 0.5
    proxy = np.column_stack([proxy, [0.7, 4.0]])
    true = np.column_stack([true, [1.0, 1.0]])
    with pytest.warns(UserWarning, match="dropped 2"):
        t = ht.RewardTable.from_arrays(proxy, true, invalid="drop")
    assert t.dropped == 2 and t.pool_sizes.tolist() == [2, 4]


def test_other_validation() -> None:
    with pytest.raises(ht.TableError, match="duplicate"):
        ht.RewardTable.from_long(
            ["a", "a", "b", "b"], [1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1], response_ids=[0, 0, 0, 1]
        )
    with pytest.raises(ht.TableError, match="empty"):
        ht.RewardTable.from_long([], [], [])
    with pytest.raises(ht.TableError, match="need prompt_ids"):
        ht.RewardTable.from_arrays(np.ones(3), np.ones(3))
    with pytest.raises(ht.TableError, match="shape"):
        ht.RewardTable.from_arrays(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ht.TableError, match="must be numeric"):
        ht.RewardTable.from_long(["a", "a"], ["x", "y"], [0, 1])
    t = ht.RewardTable.from_arrays({"a": np.ones((2, 3)), "b": np.zeros((2, 3))}, np.ones((2, 3)))
    assert t.proxy == "a" and t.with_proxy("b").proxy == "b"
    with pytest.raises(ht.TableError, match="unknown proxy"):
        t.with_proxy("c")
    with pytest.raises(FileNotFoundError):
        ht.read_table("missing.parquet")
    with pytest.raises(ht.TableError, match="cannot tell the format"):
        ht.read_table("table.xlsx")


def test_subset_and_summary() -> None:
    t = ht.synthetic.make_table("toy", 10, 5)
    sub = t.subset([3, 1])
    assert sub.n_prompts == 2 and sub.prompt_ids.tolist() == [3, 1]
    np.testing.assert_array_equal(sub.true_reward[:5], t.true_reward[15:20])  # type: ignore[index]
    assert t.summary()["responses"] == 50


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, bool])
def test_matrices_build_the_same_table_as_long_rows(dtype: type) -> None:
    """Clean 2-D arrays take a shortcut (no per-response ids, no padding masks); it must build what
    the long route builds, copy the caller's arrays, and leave any doubt to the full checks."""
    rng = np.random.default_rng(4)
    proxy = (rng.normal(size=(5, 4)) * 10).astype(dtype)
    true = (rng.normal(size=(5, 4)) * 10).astype(dtype)
    ids = np.array(["a", "b", "c", "d", "e"])
    groups = np.array(["x", "x", "y", "y", "y"])
    options = {"groups": groups, "provenance": {"rm": "test"}, "invalid": "drop"}
    fast = ht.RewardTable.from_arrays({"rm": proxy, "len": proxy * 2}, true, ids, **options)
    long = ht.RewardTable.from_long(
        np.repeat(ids, 4), {"rm": proxy.ravel(), "len": (proxy * 2).ravel()}, true.ravel(), groups=np.repeat(groups, 4),
        proxy="rm", provenance={"rm": "test"},
    )
    _assert_same(fast, long)
    assert fast.proxy == long.proxy == "rm" and dict(fast.provenance) == {"rm": "test"} and fast.dropped == 0
    for name in fast.proxy_names:
        assert fast.proxies[name].dtype == np.float64
    saved = fast.proxies["rm"].copy()
    proxy[...] = 0  # the caller's arrays are theirs
    ids[0] = "z"
    np.testing.assert_array_equal(fast.proxies["rm"], saved)
    assert fast.prompt_ids[0] == "a"


def test_matrices_the_shortcut_cannot_take_get_the_full_checks() -> None:
    big = np.full((2, 3), 9e99)  # every value allowed, but the sum of squares exceeds the bound
    big[1] = -9e99
    t = ht.RewardTable.from_arrays(big, big)
    assert t.proxies["proxy_reward"].max() == 9e99
    big[0, 0] = 2e100
    with pytest.raises(ht.TableError, match="rewards must lie within"):
        ht.RewardTable.from_arrays(big, np.ones((2, 3)))
    with pytest.raises(ht.TableError, match="groups has 3 entries for 2 prompts"):
        ht.RewardTable.from_arrays(np.ones((2, 3)), np.ones((2, 3)), groups=["a", "b", "c"])
    with pytest.raises(ht.TableError, match="fewer than two"):
        ht.RewardTable.from_arrays(np.ones((2, 1)), np.ones((2, 1)))
    for shape in ((0, 3), (3, 0)):  # no prompts, or no responses: an empty table, refused
        with pytest.raises(ht.TableError, match="empty"):
            ht.RewardTable.from_arrays(np.ones(shape), np.ones(shape))
    with pytest.raises(ValueError, match="invalid must be"):
        ht.RewardTable.from_arrays(np.ones((2, 3)), np.ones((2, 3)), invalid="keep")  # type: ignore[arg-type]


def test_read_table_hands_over_arrays_of_its_own(tmp_path: Path) -> None:
    """The reader skips the table's defensive copy: each column must still be an ordinary,
    writeable array (not a read-only view of Arrow's buffer), in one chunk or several."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    table = ht.RewardTable.from_arrays(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)))
    for rows_per_group in (1_000, 7):  # one chunk, then many
        path = tmp_path / f"t{rows_per_group}.parquet"
        pq.write_table(pq.read_table(ht.write_table(table, tmp_path / "base.parquet")), path, row_group_size=rows_per_group)
        again = ht.read_table(path)
        _assert_same(table, again)
        for values in (*again.proxies.values(), again.true_reward):
            assert values is not None and values.flags.writeable and values.dtype == np.float64


def test_hidden_files_in_a_table_folder_are_not_read(tmp_path: Path) -> None:
    """Issue 28: a hidden `.x.parquet` in a table folder (an editor's or a writer's temporary) was
    read too, doubling rows."""
    table = ht.synthetic.make_table("toy", 10, 4, seed=0)
    ht.write_table(table, tmp_path / "part-0.parquet")
    ht.write_table(table, tmp_path / ".part-0.parquet")  # a hidden copy
    assert ht.read_table(tmp_path).n_responses == 40
