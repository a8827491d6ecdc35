"""Outputs stay inside the folder the user named, whatever names a table carries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.report.figures import safe_name


@pytest.mark.parametrize(
    "name",
    ["x/../../victim/owned", "../up", "/etc/passwd", "a\\b", ".hidden", "..", "", "ok name", "é✓", "a" * 500, "nul\x00byte"],
)
def test_safe_name_never_leaves_the_folder(name: str, tmp_path: Path) -> None:
    safe = safe_name(name)
    assert safe and len(safe) <= 100 and not safe.startswith(".")
    assert set(safe) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()


def test_different_names_get_different_files() -> None:
    assert safe_name("a/b") != safe_name("a_b")  # a sanitised name carries a hash of the original
    assert safe_name("rm_300p") == "rm_300p"  # clean names are kept as they are


def _hostile_table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    proxy = rng.standard_normal((30, 6))
    table = ht.RewardTable.from_arrays(
        {"x/../../victim/owned": proxy, "../../escape": proxy + rng.standard_normal((30, 6))},
        proxy + rng.standard_normal((30, 6)),
    )
    path = tmp_path / "evil.parquet"
    ht.write_table(table, path)
    return path


def test_report_with_hostile_proxy_names_writes_only_inside_out(tmp_path: Path) -> None:
    path = _hostile_table(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    before = set(tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for command in (["report", str(path), "--out", "rep"], ["plot", str(path), "--out", "figs"]):
            result = CliRunner().invoke(main, [*command, "--bootstrap", "50"])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(cwd)
    created = set(tmp_path.rglob("*")) - before
    allowed = (work / "rep", work / "figs")
    outside = [p for p in created if not any(p == a or a in p.parents for a in allowed)]
    assert not outside, outside
    assert not (tmp_path / "victim").exists()


def test_report_does_not_follow_a_symlink_inside_out(tmp_path: Path) -> None:
    path = _hostile_table(tmp_path)
    out = tmp_path / "rep"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / "report.html").symlink_to(target)
    args = ["report", str(path), "--out", str(out), "--bootstrap", "50", "--repeats", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--force" in result.stderr  # the folder is not empty
    result = CliRunner().invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert target.read_text() == "keep me"
    assert (out / "report.html").is_file() and not (out / "report.html").is_symlink()


def test_write_table_is_atomic_cleans_stale_temporaries_and_respects_the_umask(tmp_path: Path) -> None:
    table = ht.RewardTable.from_arrays({"proxy_reward": np.arange(6.0).reshape(2, 3)}, np.ones((2, 3)))
    import subprocess
    import sys

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    stale = tmp_path / f".t.parquet.{gone}-abc123.tmp"  # what a killed write leaves (its process gone)
    stale.write_bytes(b"half a file")
    os.utime(stale, (0, 1_000_000))  # long ago
    old = os.umask(0o022)
    try:
        ht.write_table(table, tmp_path / "t.parquet")
    finally:
        os.umask(old)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    assert (tmp_path / "t.parquet").stat().st_mode & 0o777 == 0o644


def test_a_write_that_dies_half_way_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection in each writer: the Parquet table, the curve CSV and the report's files."""
    import pyarrow.parquet as pq

    table = ht.RewardTable.from_arrays({"proxy_reward": np.arange(6.0).reshape(2, 3)}, np.ones((2, 3)))
    target = tmp_path / "t.parquet"
    ht.write_table(table, target)
    before = target.read_bytes()

    def dies(data: object, where: object, *args: object, **kwargs: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", dies)
    with pytest.raises(OSError, match="disk full"):
        ht.write_table(table, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]

    from hedgetune._atomic import atomic_write_text

    page = tmp_path / "report.html"
    page.write_text("old report")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        atomic_write_text(page, "new report")
    assert page.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "t.parquet"]
