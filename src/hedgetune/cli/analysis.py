"""Analysis commands: demo, info, curve, tune, evaluate, plot, report."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .._atomic import atomic_path, staged_folder
from ..curves import curve
from ..decision import DecisionRow
from ..diagnose import diagnose_curve
from ..mechanisms import Mechanism
from ..table import RewardTable
from ._common import (
    F,
    InputError,
    analysis_options,
    budget_options,
    claim_output,
    emit_json,
    force_option,
    mechanism_options,
    parse_floats,
    progress_bar,
    proxy_chosen,
    quiet_option,
    report_options,
    table_options,
    user_errors,
)
from ._group import main


# ------------------------------------------------------------------------------------ demo
@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="hedgetune-demo",
    show_default=True,
    help="Folder for the report, figures and summary.json.",
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=10, show_default=True, help="Out-of-sample splits."
)
@click.option("--bootstrap", type=click.IntRange(min=0), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option
@user_errors
def demo(out: str, repeats: int, bootstrap: int, seed: int, quiet: bool) -> None:
    """The main job on the bundled real data: hacking curves, HedgeTune and a report."""
    from ..data import available, load
    from ..report.analysis import analyse, progress_steps, summary_lines, write_report

    descriptions = {
        "arithmetic": (
            "SmolLM2 arithmetic",
            "140 held-out reasoning-gym chain_sum problems (two one-digit terms) x 32 SmolLM2-135M-Instruct samples; "
            "true reward: the final number is correct (verifier). Proxies: length, self-confidence, trained reward heads.",
        ),
        "alpacaeval": (
            "AlpacaEval",
            "505 AlpacaEval instructions x 11 Tulu-2-DPO-13B responses; true reward: GPT-4-Turbo "
            "win probability vs GPT-3.5 (allenai/reward-bench bon_eval, Apache-2.0). Proxies computed offline.",
        ),
    }
    analyses = []
    names = available()
    if not names:
        raise InputError("no bundled table is installed")
    tables = {name: load(name) for name in names}  # each read once
    steps = sum(progress_steps(len(table.proxy_names)) for table in tables.values())
    with progress_bar(steps, "analysing", quiet, item_show_func=lambda s: s) as bar:

        def progress(message: str) -> None:
            bar.update(1, message)

        for name, table in tables.items():
            title, description = descriptions.get(name, (name, ""))
            analyses.append(
                analyse(
                    table,
                    title,
                    description=description,
                    repeats=repeats,
                    bootstrap=bootstrap,
                    seed=seed,
                    progress=progress,
                )
            )
        path = write_report(analyses, out, title="hedgetune demo: inference-time reward hacking on real data",
                            progress=progress)
    for analysis in analyses:
        for line in summary_lines(analysis):
            click.echo(line)
    click.echo(f"report: {path}")


# ------------------------------------------------------------------------------------ decide
@main.command()
@table_options
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--repeats", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also check each choice on held-out prompts over this many random half splits.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--by-group", is_flag=True, help="One decision per group of the group column (task, dataset).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: {\"deploy\": ... | null, \"rows\": [...]}.")
@user_errors
def decide(
    table: RewardTable, table_path: str, bootstrap: int, repeats: int, seed: int, by_group: bool, as_json: bool
) -> None:
    """What to deploy: every proxy x mechanism tuned once, ranked, and one recommendation."""
    from ..decision import DEFINITIONS
    from ..decision import decide as decide_table

    if by_group:  # one decision per group (task, dataset)
        if table.groups is None:
            raise InputError("--by-group needs a group column (--group-col)")
        decisions = {label: decide_table(group, bootstrap=bootstrap, repeats=repeats, seed=seed)
                     for label, group in table.by_group().items()}
        if as_json:
            emit_json({g: d.to_dict() for g, d in decisions.items()})
            return
        for group, decision in decisions.items():
            click.echo(f"[{group}] {decision.sentence()}")
        return
    decision = decide_table(table, bootstrap=bootstrap, repeats=repeats, seed=seed)
    if as_json:
        emit_json(decision.to_dict())
        return
    click.echo(decision.sentence())
    for row in decision.ranked():
        held = "" if row.held_out_gain is None else f"; held out {row.held_out_gain:+.4f} ± {row.held_out_gain_se or 0:.4f}"
        click.echo(f"  {row.sentence()}{held}")
        click.echo(f"    {row.verdict}")
    for step in decision.next_steps():
        click.echo(f"next: {step}")
    for name, meaning in DEFINITIONS.items():
        click.echo(f"{name}: {meaning}")


# ------------------------------------------------------------------------------------ info
@main.command()
@table_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def info(
    table: RewardTable,
    table_path: str,
    as_json: bool,
) -> None:
    """What is in a calibration table."""
    summary = table.summary()
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"{summary['prompts']} prompts, {summary['responses']} responses, pool size "
        f"{summary['pool_size']['min']}-{summary['pool_size']['max']} (median {summary['pool_size']['median']:g})"
    )
    for name, stats in summary["proxies"].items():
        mark = "*" if name == summary["default_proxy"] else " "
        click.echo(
            f" {mark} proxy {name}: mean {stats['mean']:.4g}, sd {stats['std']:.4g}  {stats['provenance']}"
        )
    if "true_reward" in summary:
        click.echo(
            f"   true reward: mean {summary['true_reward']['mean']:.4g}, sd {summary['true_reward']['std']:.4g}"
        )
    if summary.get("groups"):
        click.echo("   groups: " + ", ".join(f"{k} ({v})" for k, v in summary["groups"].items()))
    if summary["dropped"]:
        click.echo(f"   dropped {summary['dropped']} invalid responses")


# ------------------------------------------------------------------------------------ curve
@main.command("curve")
@table_options(streamable=True)
@mechanism_options
@analysis_options
@click.option("--thetas", default=None, help="Comma-separated parameter values (default: a grid).")
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the curve as CSV."
)
@force_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def curve_cmd(
    table: RewardTable,
    table_path: str,
    template: Mechanism,
    estimator: str,
    seed: int,
    bootstrap: int,
    thetas: str | None,
    out_path: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """The hacking curve: true reward, proxy and KL against the parameter, and the regime."""
    if out_path:
        claim_output(out_path, force)
    grid = None if thetas is None else parse_floats(thetas, "--thetas")
    c = curve(
        table,
        template,
        grid,
        estimator=estimator,  # type: ignore[arg-type]
        bootstrap=bootstrap,
        seed=seed,
    )
    # The verdict is the tuning's (same table, mechanism, estimator and bootstrap): one answer.
    from ..tune import tune

    tuned = tune(table, template, estimator=estimator, bootstrap=bootstrap, seed=seed)  # type: ignore[arg-type]
    d = diagnose_curve(c, tuned)
    if out_path:
        import pyarrow.csv as pacsv

        with atomic_path(out_path) as tmp:
            pacsv.write_csv(c.to_arrow(), tmp)
    if as_json:
        emit_json(
            {
                **c.to_dict(),
                "regime": d.regime,
                "threshold": d.threshold,
                "hacking_share": d.hacking_share,
                "summary": d.sentence(),
                "decision": DecisionRow.from_tune(tuned.mechanism, tuned).to_dict(),
            }
        )
        return
    click.echo(f"{c.label} on proxy '{c.proxy}' ({c.n_prompts} prompts, {c.estimator} estimator)")
    tail = c.pool_tail if c.pool_tail is not None and c.pool_tail.any() else None
    click.echo(
        f"{c.parameter:>10} {'samples':>8} {'true':>9} {'95% band':>19} {'proxy q':>8} {'KL':>7} {'pool KL':>8}"
        + (f" {'beyond pool':>11}" if tail is not None else "")
        + (f" {'MC s.e.':>8}" if c.monte_carlo_se is not None else "")
    )
    for k in range(c.theta.size):
        click.echo(
            f"{c.theta[k]:>10.4g} {c.expected_samples[k]:>8.3g} {c.true_reward[k]:>9.4f} "
            f"[{c.true_reward_low[k]:>8.4f},{c.true_reward_high[k]:>8.4f}] {c.proxy_quantile[k]:>8.3f} "
            f"{c.kl[k]:>7.3f} {c.kl_pool[k]:>8.3f}" + (f" {tail[k]:>11.2%}" if tail is not None else "")
            + (f" {c.monte_carlo_se[k]:>8.4f}" if c.monte_carlo_se is not None else "")
        )
    if c.monte_carlo_se is not None:
        click.echo(
            "MC s.e.: the standard error of 'true' from sampling the pools' n-subsets (too many to enumerate); "
            "the band is over prompts."
        )
    if tail is not None:
        click.echo(
            "beyond pool: how often a deployment would draw more candidates than a pool holds; "
            "those draws are valued as the whole pool, so trust the curve only where it is small."
        )
    click.echo(d.sentence())



@main.command("tune")
@table_options(streamable=True)
@mechanism_options
@analysis_options
@budget_options
@click.option("--residual", type=click.Choice(["exact", "score"]), default="exact", show_default=True)
@click.option("--by-group", is_flag=True, help="One parameter per group (needs --group-col).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--save-policy",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the serving policy (mechanism, recommended parameter, proxy, provenance) for `hedgetune gateway`.",
)
@user_errors
def tune_cmd(
    table: RewardTable,
    table_path: str,
    template: Mechanism,
    estimator: str,
    seed: int,
    bootstrap: int,
    budgets: dict[str, float | None],
    residual: str,
    save_policy: str | None,
    ensemble_auto: bool,
    by_group: bool,
    as_json: bool,
) -> None:
    """HedgeTune: the parameter where the true reward peaks, with intervals and the regime."""
    from ..tune import tune, tune_by_group

    kwargs: dict[str, Any] = dict(estimator=estimator, residual=residual, bootstrap=bootstrap, seed=seed, **budgets)
    if ensemble_auto:
        from ..ensembles import tune_ensemble

        if by_group:
            raise click.UsageError("--ensemble-k auto and --by-group cannot be combined")
        tuning = tune_ensemble(table, template, **kwargs)
        if as_json:
            emit_json(tuning.to_dict())
            return
        click.echo(f"ensemble mean - k std of {', '.join(tuning.members)}: HedgeTune's peak for each k")
        for k, theta, value, low, high in zip(
            tuning.ks, tuning.thetas, tuning.true_rewards, tuning.true_reward_low, tuning.true_reward_high, strict=True
        ):
            mark = "  <- best" if k == tuning.best_k else ""
            click.echo(f"  k = {k:<5.3g} {template.parameter} = {theta:<8.4g} true reward {value:.4f} [{low:.4f}, {high:.4f}]{mark}")
        click.echo(_tune_line(tuning.best))
        return
    if by_group:
        results = tune_by_group(table, template, **kwargs)
        if as_json:
            emit_json({group: r.to_dict() for group, r in results.items()})
            return
        for group, r in results.items():
            click.echo(f"[{group}] {_tune_line(r)}")
        return
    r = tune(table, template, **kwargs)
    if save_policy:
        from ..gateway.policy import Policy

        Policy.from_tune(r, table_path, table).save(save_policy)
        click.echo(f"policy: {save_policy} ({r.parameter} = {r.recommended_theta:.4g}, the recommended value)", err=True)
    if as_json:
        emit_json({**r.to_dict(), "decision": DecisionRow.from_tune(r.mechanism, r).to_dict()})
        return
    click.echo(_tune_line(r))
    click.echo(f"  {r.sentence()}")
    click.echo(f"  decision: {DecisionRow.from_tune(r.mechanism, r).sentence()}")
    if r.theta_ci_note:
        click.echo(f"  interval: {r.theta_ci_note}")
    if r.next_step:
        click.echo(f"  next: {r.next_step}")
    click.echo(
        f"  recommended: {r.parameter} = {r.recommended_theta:.4g} (true reward {r.recommended_true_reward:.4f}); "
        f"{r.recommended_rule}"
    )
    if r.regime_note:
        click.echo(f"  note: {r.regime_note}")
    if r.extrapolation is not None:
        click.echo(f"  {r.extrapolation.sentence(r.parameter)}")
    base = r.template.base_name
    click.echo(
        f"  true reward {r.true_reward:.4f} [{r.true_reward_ci[0]:.4f}, {r.true_reward_ci[1]:.4f}]; {base} "
        f"({r.parameter} = {r.reference_theta:.4g}) {r.reference_true_reward:.4f}; un-hedged ({r.parameter} = "
        f"{r.unhedged_theta:.4g}) {r.unhedged_true_reward:.4f}"
    )
    kl = f"KL {r.kl:.3f} nats (pool {r.kl_pool:.3f})" if math.isfinite(r.kl) else f"KL on the pool {r.kl_pool:.3f} nats"
    click.echo(
        f"  {kl}; {r.expected_samples:.3g} samples per prompt; conservative {r.parameter} = {r.conservative_theta:.4g}"
    )


def _tune_line(r: Any) -> str:
    return (
        f"{r.template.short_label()} on '{r.proxy}': {r.parameter} = {r.theta:.4g} "
        f"[{r.theta_ci[0]:.4g}, {r.theta_ci[1]:.4g}] ({r.regime}; {r.estimator} estimator)"
    )


# ------------------------------------------------------------------------------------ evaluate
@main.command("evaluate")
@table_options(streamable=True)
@mechanism_options
@analysis_options
@budget_options
@click.option(
    "--calibration-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
)
@click.option("--repeats", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def evaluate_cmd(
    table: RewardTable,
    table_path: str,
    template: Mechanism,
    estimator: str,
    seed: int,
    bootstrap: int,
    budgets: dict[str, float | None],
    calibration_fraction: float,
    repeats: int,
    as_json: bool,
) -> None:
    """Out of sample: tune on some prompts, measure the true reward on the others."""
    from ..tune import evaluate

    result = evaluate(
        table,
        template,
        calibration_fraction=calibration_fraction,
        repeats=repeats,
        seed=seed,
        estimator=estimator,
        bootstrap=min(bootstrap, 1000),
        **budgets,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(
        f"{template.short_label()} on {repeats} random {calibration_fraction:g}/{1 - calibration_fraction:g} splits "
        f"(held-out true reward, {estimator} estimator, mean ± s.e.):"
    )
    for key, stats in result.summary().items():
        click.echo(f"  {key:<13} {stats['mean']:.4f} ± {stats['se']:.4f}")


# ------------------------------------------------------------------------------------ plot/report
def _whole_analysis(default_out: str) -> Callable[[F], F]:
    """Options of ``plot`` and ``report``; the command receives the finished analysis and the
    output folder (refused if it has files, unless ``--force``)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(
            table: RewardTable,
            table_path: str,
            out: str,
            force: bool,
            bootstrap: int,
            seed: int,
            repeats: int,
            quiet: bool,
            **kwargs: Any,
        ) -> Any:
            from ..report.analysis import analyse, progress_steps

            claim_output(out, force)
            proxies = [table.proxy] if proxy_chosen() else table.proxy_names
            with progress_bar(progress_steps(len(proxies)), "analysing", quiet, item_show_func=lambda s: s) as bar:
                def progress(message: str) -> None:
                    bar.update(1, message)

                analysis = analyse(table, Path(table_path).stem, proxies=proxies, bootstrap=bootstrap, seed=seed,
                                   repeats=repeats, progress=progress)
                # Written into a temporary folder, moved into place at the end: never half a report.
                with staged_folder(out) as staging:
                    shown = fn(analysis=analysis, out=staging, table_path=table_path, progress=progress, **kwargs)
            for line in shown:  # text, or a written file (after its label) shown where it now lies
                label, path = line if isinstance(line, tuple) else ("", line)
                click.echo(path if isinstance(path, str) else f"{label}{Path(out) / path.relative_to(staging)}")
            return None

        wrapped: Any = run
        return report_options(default_out)(wrapped)

    return decorate


@main.command()
@table_options
@_whole_analysis("hedgetune-plots")
@user_errors
def plot(analysis: Any, out: Path, table_path: str, progress: Any) -> list[Path]:
    """Figures (PNG and SVG): reward vs KL, the hacking curve, the out-of-sample comparison."""
    from ..report.analysis import write_figures

    return [path for paths in write_figures(analysis, out, progress).values() for path in paths]


@main.command()
@table_options
@_whole_analysis("hedgetune-report")
@user_errors
def report(analysis: Any, out: Path, table_path: str, progress: Any) -> list[str | tuple[str, Path]]:
    """A self-contained HTML report on a table, with a short summary here."""
    from ..report.analysis import summary_lines, write_report

    path = write_report([analysis], out, title=f"hedgetune report: {Path(table_path).name}", progress=progress)
    return [*summary_lines(analysis), ("report: ", path)]


