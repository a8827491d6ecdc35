"""One answer, the same everywhere: labels that match theta, intervals that contain their point,
one hacking verdict (tied to the curve's uncertainty) rendered alike by tune, curve, the demo's
summary and the report, and errors under the CLI that name its flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.data import load
from hedgetune.diagnose import diagnose_curve


def _run(*args: str) -> str:
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == 0, out.output
    return out.stdout


def test_labels_match_theta(tmp_path: Path) -> None:
    table = ht.synthetic.make_table("toy", 120, 16, seed=0)
    ht.write_table(table, tmp_path / "t.parquet")
    for mech in ("bon", "bop"):
        data = json.loads(_run("tune", str(tmp_path / "t.parquet"), "-m", mech, "--bootstrap", "40", "--json"))
        assert f"{data['theta']:g}" in data["label"] or repr(float(data["theta"])) in data["label"], data["label"]
    header = _run("curve", str(tmp_path / "t.parquet"), "-m", "bon", "--bootstrap", "20").splitlines()[0]
    assert "n=1.0" not in header and header.startswith("Best-of-n")


def _results(table: ht.RewardTable) -> list[ht.TuneResult]:
    out = []
    for proxy in table.proxy_names:
        for mech, kwargs in (("bon", {}), ("bop", {}), ("sbon", {"n": 4, "on": "quantile"})):
            out.append(ht.tune(table, mech, proxy=proxy, bootstrap=150, seed=0, **kwargs))
    return out


@pytest.mark.parametrize("name", ["alpacaeval", "arithmetic"])
def test_intervals_contain_their_point_and_conservative_stays_below(name: str) -> None:
    for r in _results(load(name)):
        assert r.theta_ci[0] <= r.theta <= r.theta_ci[1], (r.proxy, r.mechanism, r.theta, r.theta_ci)
        assert r.true_reward_ci[0] <= r.true_reward <= r.true_reward_ci[1], (r.proxy, r.mechanism)
        assert r.reference_theta <= r.conservative_theta <= r.theta, (r.proxy, r.mechanism)


def test_an_interval_over_the_whole_range_is_called_uninformative(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gold = rng.random((6, 8))
    table = ht.RewardTable.from_arrays(rng.random((6, 8)), gold)  # 6 prompts, a proxy of pure noise
    r = ht.tune(table, "bop", bootstrap=200, seed=0)
    if r.theta_ci == r.search_range:
        assert "uninformative" in r.theta_ci_note
    ht.write_table(table, tmp_path / "t.parquet")
    text = _run("tune", str(tmp_path / "t.parquet"), "-m", "bop", "--bootstrap", "200")
    if r.theta_ci == r.search_range:
        assert "uninformative: more prompts needed" in text


@pytest.mark.parametrize("name", ["alpacaeval", "arithmetic"])
def test_one_verdict_in_tune_curve_summary_and_report(name: str) -> None:
    """Review: the same curve was 'loses 36% of its gain' in the demo and `curve`, 'increasing'
    in the report and 'flat after the peak' in `tune`."""
    from hedgetune.report.analysis import analyse, summary_lines

    table = load(name)
    analysis = analyse(table, name, bootstrap=150, repeats=2, out_of_sample_proxies=[])
    rows = {(row["proxy"], row["mechanism"]): row for row in analysis.rows()}
    summary = "\n".join(summary_lines(analysis))
    assert "loses 0%" not in summary
    for (proxy, key), row in rows.items():
        tuned = analysis.proxies[proxy].tuned[key]
        assert row["regime"] == tuned.regime == analysis.proxies[proxy].diagnoses[key].regime, (proxy, key)
        assert row["sentence"] == tuned.sentence(), (proxy, key)
        assert "loses 0%" not in row["sentence"]
        if key == "bon":
            assert tuned.sentence() in summary
            c = ht.curve(table, "bon", proxy=proxy, bootstrap=150, seed=0)
            assert diagnose_curve(c, tuned).regime == tuned.regime


def test_the_curve_command_renders_tunes_verdict(tmp_path: Path) -> None:
    table = load("alpacaeval")
    ht.write_table(table, tmp_path / "a.parquet")
    for proxy in ("rm_300p_flip25", "length"):
        tuned = ht.tune(table, "bon", proxy=proxy, bootstrap=100, seed=0)
        data = json.loads(_run("curve", str(tmp_path / "a.parquet"), "-m", "bon", "--proxy-col", proxy,
                               "--bootstrap", "100", "--json"))
        assert data["regime"] == tuned.regime and data["summary"] == tuned.sentence()
        text = _run("tune", str(tmp_path / "a.parquet"), "-m", "bon", "--proxy-col", proxy, "--bootstrap", "100")
        assert tuned.sentence() in text


def test_cli_errors_name_the_flags(tmp_path: Path) -> None:
    table = ht.synthetic.make_table("toy", 40, 8, seed=0)
    ht.write_table(table, tmp_path / "t.parquet")
    out = CliRunner().invoke(main, ["tune", str(tmp_path / "t.parquet"), "-m", "sbon", "--n", "8", "--max-kl", "1.5"])
    assert out.exit_code == 2 and "--on quantile" in out.output and "on='quantile'" not in out.output
    (tmp_path / "nan.csv").write_text("prompt_id,proxy_reward,true_reward\n0,1,1\n0,nan,0\n1,1,1\n1,2,0\n")
    out = CliRunner().invoke(main, ["info", str(tmp_path / "nan.csv")])
    assert out.exit_code == 2 and "--invalid drop" in out.output and "invalid='drop'" not in out.output
    (tmp_path / "t.weird").write_text("x")
    out = CliRunner().invoke(main, ["info", str(tmp_path / "t.weird")])
    assert out.exit_code == 2 and "--format" in out.output and "format=" not in out.output


@pytest.mark.parametrize("name", ["alpacaeval", "arithmetic", "toy", "increasing", "flat"])
def test_decide_json_demo_report_and_policy_say_the_same(name: str, tmp_path: Path) -> None:
    """The decision is computed once and rendered alike by `decide --json`, the demo's summary,
    the HTML report and `tune --save-policy`."""
    from hedgetune.gateway import Policy
    from hedgetune.report.analysis import analyse, summary_lines, write_report

    if name in ("alpacaeval", "arithmetic"):
        table = load(name)
    else:
        rng = np.random.default_rng(0)
        base = ht.synthetic.make_table(name, 80, 12, seed=0)
        gold = base.true_reward.reshape(80, 12)
        proxy = base.proxies["proxy_reward"].reshape(80, 12)
        table = ht.RewardTable.from_arrays({"proxy_reward": proxy, "noise": rng.random(gold.shape)}, gold)
    path = tmp_path / "t.parquet"
    ht.write_table(table, path)
    data = json.loads(_run("decide", str(path), "--bootstrap", "120", "--json"))
    decision = ht.decide(table, bootstrap=120)
    assert data["sentence"] == decision.sentence()
    assert (data["deploy"] is None) == (decision.deploy is None)
    analysis = analyse(table, name, bootstrap=120, repeats=2)
    assert analysis.decision().sentence() == decision.sentence()
    assert summary_lines(analysis)[1].strip() == decision.sentence()
    page = write_report([analysis], tmp_path / "report").read_text()
    import html as html_module

    assert html_module.escape(decision.sentence()) in page
    if decision.deploy is not None:
        d = decision.deploy
        _run("tune", str(path), "-m", {"bon": "bon", "bop": "bop"}.get(d.mechanism, "sbon"), "--proxy-col", d.proxy,
             "--bootstrap", "120", "--save-policy", str(tmp_path / "p.json"),
             *(["--n", "4", "--on", "quantile"] if d.mechanism == "sbon-n4" else []))
        policy = Policy.load(tmp_path / "p.json")
        assert policy.theta == pytest.approx(d.recommended_theta) and policy.source["verdict"] == d.verdict


def _in_a_terminal(args: list[str], cwd: Path) -> str:
    """Run the command line with a pseudo-terminal as its output (as a person sees it)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "hedgetune.cli", *args], stdout=follower, stderr=follower,
                               stdin=subprocess.DEVNULL, cwd=cwd, env={**os.environ, "COLUMNS": "120"})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    process.wait(300)
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_in_a_terminal_and_quiet_otherwise(tmp_path: Path) -> None:
    """Review: no progress for 50-70 s on demo, plot and report."""
    table = ht.synthetic.make_table("toy", 40, 8, seed=0)
    ht.write_table(table, tmp_path / "t.parquet")
    shown = _in_a_terminal(["report", "t.parquet", "--out", "r1", "--bootstrap", "30", "--repeats", "2"], tmp_path)
    assert "analysing" in shown and "7/7" in shown and "figures" in shown, shown[-500:]
    quiet = _in_a_terminal(["report", "t.parquet", "--out", "r2", "--bootstrap", "30", "--repeats", "2", "--quiet"], tmp_path)
    assert "analysing" not in quiet and "report:" in quiet
    piped = CliRunner().invoke(main, ["report", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "r3"),
                                      "--bootstrap", "30", "--repeats", "2"])
    assert piped.exit_code == 0 and "analysing" not in piped.output  # not a terminal: no bar


def test_generation_progress_counts_real_tokens_per_prompt(tmp_path: Path) -> None:
    """Review: `generate` showed "generating" for 14 minutes, then "0 tokens/s"."""
    from hedgetune.pipeline.backends import Prompt, Sample
    from hedgetune.pipeline.generate import generate

    class Local:
        name, model = "local", "stub"

        def generate_many(self, prompts: list[Prompt], n: int, seeds: list[int]) -> list[list[Sample]]:
            return [[Sample("x y z", [-0.1, -0.2, -0.3]) for _ in range(n)] for _ in prompts]

    seen: list[tuple[int, int]] = []
    prompts = [Prompt(f"p{i}", f"question {i}", "1") for i in range(5)]
    stats = generate(prompts, Local(), tmp_path / "run", n=2, prompts_per_shard=4,
                     progress=lambda s: seen.append((s.prompts, s.tokens)))
    assert [p for p, _ in seen[:4]] == [1, 2, 3, 4]  # after every prompt, not every shard
    assert seen[-1] == (5, 30) and stats.tokens == 30 and stats.tokens_per_second > 0


def test_tune_and_curve_json_carry_the_decisions_row(tmp_path: Path) -> None:
    table = load("arithmetic")
    ht.write_table(table, tmp_path / "a.parquet")
    decision = ht.decide(table, bootstrap=100)
    rows = {(r.proxy, r.mechanism): r for r in decision.rows}
    for proxy in ("rm_60p_flip25", "mean_logprob"):
        for mech in ("bon", "bop"):
            expected = rows[(proxy, mech)].to_dict()
            tuned = json.loads(_run("tune", str(tmp_path / "a.parquet"), "-m", mech, "--proxy-col", proxy,
                                    "--bootstrap", "100", "--json"))
            assert tuned["decision"] == expected
            curved = json.loads(_run("curve", str(tmp_path / "a.parquet"), "-m", mech, "--proxy-col", proxy,
                                     "--bootstrap", "100", "--json"))
            assert curved["decision"] == expected
            text = _run("tune", str(tmp_path / "a.parquet"), "-m", mech, "--proxy-col", proxy, "--bootstrap", "100")
            assert rows[(proxy, mech)].sentence() in text


def test_decide_per_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gold = rng.random((40, 8))
    table = ht.RewardTable.from_arrays({"p": gold + rng.normal(0, 0.1, gold.shape)}, gold,
                                       groups=np.repeat(["a", "b"], 20))
    ht.write_table(table, tmp_path / "g.parquet")
    data = json.loads(_run("decide", str(tmp_path / "g.parquet"), "--group-col", "group", "--by-group", "--bootstrap", "50", "--json"))
    assert set(data) == {"a", "b"} and all("deploy" in d and "rows" in d for d in data.values())


def test_what_to_do_next_when_the_pools_stop_too_early() -> None:
    """Review: on a late-peaking shape with small pools the answer said "larger pools would tell"
    but not how large, nor which mechanism these pools support furthest."""
    from hedgetune.tune import pool_size_for

    table = ht.synthetic.make_table("toy", 100, 8, seed=0)  # the toy peaks at n = 12.5: past pools of 8
    decision = ht.decide(table, bootstrap=100)
    steps = decision.next_steps()
    assert steps and "samples per prompt (now 8)" in steps[0] and "support Best-of-n furthest (8 samples" in steps[0]
    bop = next(r for r in decision.rows if r.mechanism == "bop")
    needed = int(re.search(r"about (\d+) samples", bop.next_step).group(1))  # type: ignore[union-attr]
    # Independent check: the Poisson tail at that pool size, for twice the mu supported now.
    from scipy import stats

    mu_now = ht.BestOfPoisson(0).deployment_limit(8)
    assert stats.poisson.sf(needed - 1, 2 * mu_now) <= 0.01 < stats.poisson.sf(needed - 2, 2 * mu_now)
    assert pool_size_for(ht.BestOfN(1), 25.0) == 25


@pytest.mark.parametrize("name", ["alpacaeval", "arithmetic"])
def test_the_deployment_is_one_the_gateway_can_serve(name: str) -> None:
    """A recommendation a user cannot deploy is no answer: Soft Best-of-n tuned on quantiles (the
    gateway scores raw proxies) is ranked but never the deployment."""
    from hedgetune.gateway.policy import Policy
    from hedgetune.mechanisms import servable

    decision = ht.decide(load(name), bootstrap=150)
    quantile_rows = [r for r in decision.rows if r.mechanism == "sbon-n4"]
    assert quantile_rows and all(not r.servable for r in quantile_rows)
    assert all(r.servable for r in decision.rows if r.mechanism in ("bon", "bop"))
    if decision.deploy is not None:
        assert decision.deploy.servable
        mech = {"bon": "bon", "bop": "bop"}[decision.deploy.mechanism]
        policy = Policy(mechanism=mech, theta=decision.deploy.recommended_theta, proxy=decision.deploy.proxy)
        servable(policy.mechanism_at_theta())  # raises if the gateway could not serve it
