"""Every malformed input on the command line ends with exit code 2, one line on stderr, nothing on
stdout and no traceback. The files live in ``tests/data/malformed/`` (``make_malformed.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hedgetune.cli import main

CORPUS = Path(__file__).parent / "data" / "malformed"

# (file, extra arguments, a fragment the one-line message must contain)
CASES = [
    ("not_gzip.csv.gz", [], "not a gzip"),
    ("random_bytes.npz", [], "not an .npz archive"),
    ("random_bytes.parquet", [], "cannot read"),
    ("empty.csv", [], "empty"),
    ("empty.parquet", [], "cannot read"),
    ("header_only.csv", [], "empty"),
    ("bad_quote.csv", [], "CSV"),
    ("not_objects.jsonl", [], "cannot read"),
    ("text_rewards.csv", [], "numeric"),
    ("one_candidate.csv", [], "fewer than two"),
    ("nan_reward.csv", [], "NaN"),
    ("huge_reward.csv", [], "1e+100"),
    ("truncated.npz", [], "truncated or corrupt"),
    ("declares_7_tib.npz", [], "declares"),
    ("object_array.npz", [], "Python objects"),
    ("provenance_list.parquet", [], "provenance"),
    ("provenance_string.parquet", [], "provenance"),
    ("proxies_not_a_list.parquet", [], "proxies"),
    ("proxies_path_names.parquet", [], "proxies"),
    ("truncated.parquet", [], "cannot read"),
    ("string_proxy.parquet", [], "numeric"),
    ("plain.parquet", ["--format", "csv"], "Parquet"),
    ("truncated.npz", ["--prompt-col", "nope"], "truncated or corrupt"),
]


def _assert_clean_failure(args: list[str], fragment: str, stdin: str | None = None) -> None:
    result = CliRunner().invoke(main, args, input=stdin)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{args}: {result.exception!r}"
    )
    assert result.exit_code == 2, (args, result.output, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    assert lines[0].isprintable()
    assert fragment.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize(("name", "extra", "fragment"), CASES, ids=[f"{c[0]}{' '.join(c[1])}" for c in CASES])
@pytest.mark.parametrize("command", ["curve", "info"])
def test_malformed_tables_fail_cleanly(command: str, name: str, extra: list[str], fragment: str) -> None:
    assert (CORPUS / name).exists(), "run tests/data/make_malformed.py"
    args = [command, str(CORPUS / name), *extra]
    if command == "curve":
        args += ["-m", "bon", "--bootstrap", "10"]
    _assert_clean_failure(args, fragment)


def test_npz_column_options_are_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, proxy_reward=np.random.default_rng(0).random((3, 4)), true_reward=np.ones((3, 4)))
    _assert_clean_failure(["curve", str(path), "--prompt-col", "nope"], "nope")
    _assert_clean_failure(["curve", str(path), "--group-col", "task"], "task")
    np.savez(path, proxy_reward=np.ones((3, 4)), true_reward=np.ones((3, 4)), task=np.array(["a", "b", "a"]))
    result = CliRunner().invoke(main, ["info", str(path), "--group-col", "task", "--json"])
    assert result.exit_code == 0, result.output


def test_a_huge_bootstrap_is_refused_before_allocation() -> None:
    _assert_clean_failure(
        ["tune", str(CORPUS / "plain.parquet"), "-m", "bon", "--bootstrap", "2000000000000"], "memory"
    )


def test_huge_soft_best_of_n_parameters_do_not_crash() -> None:
    result = CliRunner().invoke(
        main, ["curve", str(CORPUS / "plain.parquet"), "-m", "sbon", "--n", "2", "--thetas", "1e308", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert np.isfinite(json.loads(result.stdout)["true_reward"][0])


def test_deeply_nested_json_on_select_fails_cleanly() -> None:
    _assert_clean_failure(["select", "-m", "bon", "--theta", "4"], "nested", stdin="[" * 100_000 + "]" * 100_000)


def test_wide_soft_best_of_n_selection_on_the_command_line() -> None:
    row = json.dumps([[0.0] * 40_000])
    result = CliRunner().invoke(main, ["select", "-m", "sbon", "--theta", "1"], input=row)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", [["generate", "--task", "chain_sum", "--out", "x"], ["serve"]])
def test_pipeline_commands_without_the_extra_say_what_to_install(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for module in ("torch", "transformers", "reasoning_gym"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    _assert_clean_failure(command, "hedgetune[pipeline]")
