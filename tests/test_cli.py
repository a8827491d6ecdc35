"""The command line: every command, the JSON schema, and user errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "toy.parquet"
    ht.write_table(ht.synthetic.make_table("toy", 40, 40, noise=0.2, seed=1), path)
    return path


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.output


def test_help_everywhere() -> None:
    for command in (
        [],
        ["demo"],
        ["info"],
        ["curve"],
        ["tune"],
        ["evaluate"],
        ["plot"],
        ["report"],
        ["select"],
    ):
        code, out = run(*command, "--help")
        assert code == 0 and "Usage" in out


def test_info(table_path: Path) -> None:
    code, out = run("info", str(table_path))
    assert code == 0 and "40 prompts, 1600 responses" in out
    code, out = run("info", str(table_path), "--json")
    assert json.loads(out)["prompts"] == 40


def test_tune_json_schema(table_path: Path) -> None:
    code, out = run("tune", str(table_path), "--mechanism", "bop", "--json", "--bootstrap", "100")
    assert code == 0
    d = json.loads(out)
    for key in (
        "mechanism",
        "theta",
        "theta_ci",
        "true_reward",
        "true_reward_ci",
        "kl",
        "expected_samples",
        "regime",
        "reference_true_reward",
        "unhedged_theta",
        "unhedged_true_reward",
        "recommended_theta",
        "options",
    ):
        assert key in d, key
    assert "unhedged" not in d and "conservative" not in d  # one key per field, no nested copies
    json.dumps(d, allow_nan=False)  # strict JSON
    assert len(d["theta_ci"]) == 2 and d["mechanism"] == "bop" and d["regime"] == "rise-then-fall"


def test_tune_text_sbon_and_budget(table_path: Path) -> None:
    code, out = run(
        "tune", str(table_path), "-m", "sbon", "--n", "4", "--on", "quantile", "--bootstrap", "50"
    )
    assert code == 0 and "beta =" in out
    code, out = run("tune", str(table_path), "-m", "bon", "--max-n", "5", "--json", "--bootstrap", "0")
    assert json.loads(out)["theta"] == 5


def test_curve_and_csv(table_path: Path, tmp_path: Path) -> None:
    csv = tmp_path / "curve.csv"
    code, out = run(
        "curve",
        str(table_path),
        "-m",
        "bon",
        "--thetas",
        "1,2,4,8,16,64",
        "--out",
        str(csv),
        "--bootstrap",
        "50",
        "--estimator",
        "plugin",
    )
    assert code == 0 and "peaks at n" in out
    assert csv.read_text().startswith('"theta"')
    # The default (deployment) estimator cannot go past the pool size, and says so.
    code, out = run("curve", str(table_path), "-m", "bon", "--thetas", "1,2,4,8,16,64", "--bootstrap", "0")
    assert code == 2 and "smallest pool" in out
    code, out = run("curve", str(table_path), "-m", "bop", "--json", "--bootstrap", "0")
    assert json.loads(out)["regime"] == "rise-then-fall"


def test_evaluate(table_path: Path) -> None:
    code, out = run("evaluate", str(table_path), "--repeats", "3", "--bootstrap", "50", "--json")
    assert code == 0
    assert set(json.loads(out)["summary"]) == {"tuned", "conservative", "recommended", "oracle", "reference", "unhedged"}


def test_plot_and_report(table_path: Path, tmp_path: Path) -> None:
    code, out = run(
        "plot", str(table_path), "--out", str(tmp_path / "plots"), "--bootstrap", "50", "--repeats", "2"
    )
    assert code == 0
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 10_000 for p in pngs)
    assert len(list((tmp_path / "plots").glob("*.svg"))) == 3
    code, out = run(
        "report", str(table_path), "--out", str(tmp_path / "rep"), "--bootstrap", "50", "--repeats", "2"
    )
    assert code == 0 and "report:" in out
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64" in page and "rise-then-fall" in page


def test_select() -> None:
    code, out = run("select", "-m", "bon", "--theta", "4", input="0.1 0.9 0.3\n5,1\n")
    assert code == 0 and out.split() == ["1", "0"]
    code, out = run("select", "-m", "bop", "--theta", "3", "--json", input="[[1, 2, 3], [3, 2]]")
    assert json.loads(out) == [2, 0]


def test_demo_writes_the_report(tmp_path: Path) -> None:
    code, out = run("demo", "--out", str(tmp_path), "--repeats", "2", "--bootstrap", "50")
    assert code == 0, out
    assert (tmp_path / "report.html").exists() and (tmp_path / "summary.json").exists()
    assert "AlpacaEval: 505 prompts" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["AlpacaEval"]["results"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "missing.parquet"], "no such table"),
        (["tune", "{t}", "--proxy-col", "nope"], "missing column"),
        (["tune", "{t}", "--max-samples", "0.5"], "--max-samples must be >= 1"),
        (["tune", "{t}", "-m", "bop", "--n", "4"], "--n applies to -m sbon, itp"),
        (["curve", "{t}", "--thetas", "1,x"], "comma-separated numbers"),
        (["select", "--theta", "2"], "no scores given"),
        (["select", "--theta", "-1"], "mu must be >= 0"),
    ],
)
def test_user_errors_exit_2_without_traceback(table_path: Path, args: list[str], message: str) -> None:
    args = [a.format(t=table_path) for a in args]
    code, out = run(*args, input="")
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_scores_from_npy(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.array([[0.0, 2.0, 1.0]]))
    code, out = run("select", "--scores", str(path), "-m", "bon", "--theta", "2")
    assert code == 0 and out.strip() == "1"


@pytest.mark.parametrize("command", ["curve", "plot", "report"])
def test_outputs_are_never_overwritten_without_force(command: str, tmp_path: Path) -> None:
    table = tmp_path / "t.npz"
    rng = np.random.default_rng(0)
    np.savez(table, proxy_reward=rng.random((6, 4)), true_reward=rng.random((6, 4)))
    out = tmp_path / ("c.csv" if command == "curve" else "out")
    if command == "curve":
        out.write_text("precious")
        args = ["curve", str(table), "-m", "bon", "--bootstrap", "10", "--out", str(out)]
    else:
        out.mkdir()
        (out / "precious.txt").write_text("precious")
        args = [command, str(table), "--out", str(out), "--bootstrap", "10", "--repeats", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (out if command == "curve" else out / "precious.txt").read_text() == "precious"
    result = CliRunner().invoke(main, [*args, "--force"])
    assert result.exit_code == 0, result.output
    if command == "curve":
        assert out.read_text().startswith('"theta"')
        assert not list(tmp_path.glob("*.tmp"))
