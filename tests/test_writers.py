"""Writers never delete what is not theirs (issue 28, items 3 and 4): temporaries carry their
writer's process id; a writer sweeps only temporaries whose process is gone and that are old."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import hedgetune as ht
from hedgetune._atomic import atomic_path, remove_stale_temporaries


def test_a_users_own_dot_tmp_file_survives_a_write(tmp_path: Path) -> None:
    notes = tmp_path / ".notes.tmp"
    notes.write_text("mine")
    ht.write_table(ht.synthetic.make_table("toy", 5, 4, seed=0), tmp_path / "t.parquet")
    assert notes.read_text() == "mine"


def test_only_abandoned_temporaries_are_swept(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.parquet") as tmp:
        assert str(os.getpid()) in tmp.name  # named after its writer
        tmp.write_bytes(b"in progress")
        assert remove_stale_temporaries(tmp_path, older_than=0.0) == []  # ours, alive: kept
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".y.parquet.{pid}-abcd1234.tmp"
    stale.write_bytes(b"left by a killed writer")
    fresh = tmp_path / f".z.parquet.{pid}-abcd1234.tmp"
    fresh.write_bytes(b"too recent to judge")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(tmp_path) == [stale]  # dead owner and older than an hour
    assert fresh.exists()


def test_concurrent_writers_into_one_folder_all_succeed(tmp_path: Path) -> None:
    """Review: three processes writing six tables each into one folder: 17 of 18 writes failed."""
    code = (
        "import sys, hedgetune as ht\n"
        "t = ht.synthetic.make_table('toy', 50, 8, seed=0)\n"
        "for k in range(6):\n"
        "    ht.write_table(t, sys.argv[1] + f'/w{sys.argv[2]}-{k}.parquet')\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(w)]) for w in range(3)]
    assert [w.wait(120) for w in writers] == [0, 0, 0]
    assert len(list(tmp_path.glob("w*.parquet"))) == 18
    assert not list(tmp_path.glob(".*.tmp"))
