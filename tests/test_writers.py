"""Writers never delete what is not theirs (issue 28, items 3 and 4): temporaries carry their
writer's process id; a writer sweeps only temporaries whose process is gone and that are old."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


# ------------------------------------------------------------ one output, one writer (issue 28, 11-12)
def _hedgetune(*args: str, limit_bytes: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        import resource

        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "-m", "hedgetune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit)


def _table(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    ht.write_table(ht.synthetic.make_table("toy", 60, 12, seed=0), path)
    return path


def test_concurrent_runs_to_one_output_write_it_once(tmp_path: Path) -> None:
    """Four runs at once to the same --out, none with --force: exactly one writes; the others
    exit 2 with one line (another run holds it, or it exists by the time they look)."""
    table = _table(tmp_path)
    runs = [_hedgetune("curve", str(table), "-m", "bop", "--out", str(tmp_path / "c.csv")) for _ in range(4)]
    results = [(run.wait(120), run.stderr.read() if run.stderr else "") for run in runs]
    assert sorted(code for code, _ in results) == [0, 2, 2, 2], results
    for code, err in results:
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and ("another hedgetune run" in err or "already exists" in err), err
    assert (tmp_path / "c.csv").exists() and not (tmp_path / ".c.csv.lock").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    from hedgetune._atomic import OutputBusy, exclusive

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".out.csv.lock").write_text(dead.stdout.strip())
    with exclusive(tmp_path / "out.csv"):
        assert (tmp_path / ".out.csv.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".out.csv.lock").exists()
    (tmp_path / ".out.csv.lock").write_text("1")  # a live process (init) holds it
    try:
        with exclusive(tmp_path / "out.csv"):
            raise AssertionError("entered a held output")
    except OutputBusy as exc:
        assert "pid 1" in str(exc)
    from hedgetune.pipeline.generate import Prompt, generate

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".run.json.lock").write_text("1")
    try:
        generate([Prompt("p", "hi")], object(), tmp_path / "run", n=1)  # type: ignore[arg-type]
        raise AssertionError("generated into a held run folder")
    except OutputBusy:
        pass


def test_an_output_over_the_file_size_limit_leaves_nothing_and_one_line(tmp_path: Path) -> None:
    """ulimit -f (the same path as a full disk): the report fails in one line and leaves no half report."""
    table = _table(tmp_path)
    run = _hedgetune("report", str(table), "--out", str(tmp_path / "rep"), "--bootstrap", "20", "--repeats", "2",
                     limit_bytes=20_000)
    code, err = run.wait(300), run.stderr.read() if run.stderr else ""
    assert code == 2, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and "cannot write" in err and "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "rep").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rep")] == []  # no staging left


def test_a_full_disk_is_said_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    from click.testing import CliRunner

    from hedgetune.cli import main

    table = _table(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    result = CliRunner().invoke(main, ["curve", str(table), "-m", "bon", "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 2 and "MiB free" in result.stderr and "nothing was written" in result.stderr
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / ".c.csv.lock").exists()
