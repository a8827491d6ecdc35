"""Writes the corpus of malformed tables in ``tests/data/malformed/`` (run it to regenerate).

Each file is something a careless or hostile user could hand the command line; every one must end
with exit code 2 and one line on stderr (``tests/test_malformed.py``).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent / "malformed"


def _parquet(name: str, table: pa.Table, metadata: object = None) -> None:
    if metadata is not None:
        table = table.replace_schema_metadata({b"hedgetune": json.dumps(metadata).encode()})
    pq.write_table(table, HERE / name)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    good = pa.table(
        {"prompt_id": [0, 0, 1, 1], "proxy_reward": [0.1, 0.2, 0.3, 0.4], "true_reward": [0.0, 1.0, 1.0, 0.0]}
    )
    # Files that are not what their name says.
    (HERE / "not_gzip.csv.gz").write_bytes(b"prompt_id,proxy_reward,true_reward\n0,1,1\n")
    (HERE / "random_bytes.npz").write_bytes(bytes(range(256)) * 2)
    (HERE / "random_bytes.parquet").write_bytes(bytes(range(255, -1, -1)) * 2)
    (HERE / "empty.csv").write_bytes(b"")
    (HERE / "empty.parquet").write_bytes(b"")
    (HERE / "header_only.csv").write_text("prompt_id,proxy_reward,true_reward\n")
    (HERE / "bad_quote.csv").write_text('prompt_id,proxy_reward,true_reward\n0,"0.1,1\n0,0.2,0\n')
    (HERE / "not_objects.jsonl").write_text("[1, 2, 3]\n4\n")
    (HERE / "text_rewards.csv").write_text("prompt_id,proxy_reward,true_reward\n0,high,1\n0,low,0\n")
    (HERE / "one_candidate.csv").write_text("prompt_id,proxy_reward,true_reward\n0,0.5,1\n1,0.2,0\n")
    (HERE / "nan_reward.csv").write_text("prompt_id,proxy_reward,true_reward\n0,nan,1\n0,0.2,0\n")
    (HERE / "huge_reward.csv").write_text("prompt_id,proxy_reward,true_reward\n0,1e300,1\n0,0.2,0\n")
    # Archives: truncated, crafted, pickled.
    buffer = io.BytesIO()
    np.savez(buffer, proxy_reward=np.random.default_rng(0).random((4, 5)), true_reward=np.ones((4, 5)))
    (HERE / "truncated.npz").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
    )
    with zipfile.ZipFile(HERE / "declares_7_tib.npz", "w") as archive:
        for name in ("proxy_reward.npy", "true_reward.npy"):
            archive.writestr(name, header.getvalue() + b"\0" * 64)
    np.savez(
        HERE / "object_array.npz",
        proxy_reward=np.array([[{"a": 1}, 2]], dtype=object),
        true_reward=np.ones((1, 2)),
    )
    # Parquet with crafted hedgetune metadata.
    _parquet("provenance_list.parquet", good, {"proxies": ["proxy_reward"], "true": True, "provenance": [1, 2]})
    _parquet("provenance_string.parquet", good, {"proxies": ["proxy_reward"], "true": True, "provenance": "x"})
    _parquet("proxies_not_a_list.parquet", good, {"proxies": 7, "true": True})
    _parquet("proxies_path_names.parquet", good, {"proxies": [["a"]], "true": True})
    _parquet("truncated.parquet", good)
    data = (HERE / "truncated.parquet").read_bytes()
    (HERE / "truncated.parquet").write_bytes(data[: len(data) // 2])
    _parquet("string_proxy.parquet", pa.table({"prompt_id": [0, 0], "proxy_reward": ["a", "b"], "true_reward": [1.0, 0.0]}))
    _parquet("plain.parquet", good)


if __name__ == "__main__":
    main()
