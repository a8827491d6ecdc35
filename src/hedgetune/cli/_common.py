"""What the commands share: option groups, input errors as one line, safe output paths."""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import click
import numpy as np

from .._atomic import UNWRITABLE, cannot_write, exclusive, require_free_space
from .._jsonable import jsonable
from ..ensembles import RULES, with_ensemble
from ..io import read_table
from ..mechanisms import lookup, make, names
from ..mechanisms.registry import option_names
from ..protocol import UpstreamError
from ..streaming import scan_table
from ..table import RewardTable, TableError

F = TypeVar("F", bound=Callable[..., Any])


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(jsonable(obj)))


#: The library's errors for bad input: shown as one line with exit code 2.
USER_ERRORS = (TableError, ValueError, TypeError, FileNotFoundError, UpstreamError)


def _with_options(options: list[Callable[[Any], Any]], fn: Any) -> Any:
    """Apply click decorators in reading order (the first listed is the first shown)."""
    for option in reversed(options):
        fn = option(fn)
    return fn


#: The library's keyword arguments as the command line spells them, for errors raised under it.
_FLAGS = (
    (re.compile(r"\b(on|invalid|residual|estimator|format)='([\w-]+)'"), lambda m: f"--{m.group(1)} {m.group(2)}"),
    (re.compile(r"\bpass format="), lambda m: "pass --format"),
    (re.compile(r"\b(max_kl|max_n|max_theta|max_samples)\b"), lambda m: "--" + m.group(1).replace("_", "-")),
)


def as_flags(message: str) -> str:
    """``message`` with the library's keyword arguments written as the CLI's flags."""
    for pattern, replace in _FLAGS:
        message = pattern.sub(replace, message)
    return message


def user_errors(fn: F) -> F:
    """Turn the library's input errors into ``click`` usage errors (message, exit code 2), naming
    the command line's flags where the library names its keyword arguments."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise InputError(as_flags(str(exc))) from None
        except OSError as exc:  # an output that cannot be written: read-only, a full disk, ulimit -f
            if exc.errno not in UNWRITABLE:
                raise
            raise InputError(str(cannot_write(exc, exc.filename or "the output"))) from None

    return wrapper  # type: ignore[return-value]


class InputError(click.ClickException):
    """A problem with what the user gave: exit code 2, one line, no traceback."""

    exit_code = 2


#: The options every command that reads a table shares, in the order --help shows them.
_TABLE_OPTIONS = [
    click.argument("table_path", metavar="TABLE", type=click.Path()),
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
    click.option(
        "--ensemble",
        type=click.Choice(list(RULES)),
        default=None,
        help="Rank by an ensemble of the proxy columns (standardised): their mean, minimum, or "
        "mean - k std.",
    ),
    click.option(
        "--ensemble-k",
        default="1",
        show_default=True,
        help="The std penalty k of --ensemble mean-std; 'auto' (tune only) tunes it with HedgeTune.",
    ),
]
#: ``--stream N``: read a Parquet file or folder N prompts at a time.
_STREAM_OPTION = click.option(
    "--stream",
    "stream_prompts",
    type=click.IntRange(min=1),
    default=None,
    help="Read the table (a Parquet file or a folder of them) this many prompts at a time "
    "instead of all at once: for tables larger than memory; same results.",
)


@overload
def table_options(fn: F) -> F: ...


@overload
def table_options(fn: None = None, *, streamable: bool = False) -> Callable[[F], F]: ...


def table_options(fn: F | None = None, *, streamable: bool = False) -> Any:
    """The options every command that reads a table shares; ``streamable`` commands also take
    ``--stream N`` (read a Parquet file or folder N prompts at a time: tables larger than memory)."""
    if fn is None:
        return functools.partial(table_options, streamable=streamable)
    options = [*_TABLE_OPTIONS, *([_STREAM_OPTION] if streamable else [])]
    takes_auto = "ensemble_auto" in inspect.signature(fn).parameters

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
        ensemble: str | None,
        ensemble_k: str,
        stream_prompts: int | None = None,
        **kwargs: Any,
    ) -> Any:
        auto = ensemble_k.strip().lower() == "auto"
        if stream_prompts is not None:
            if ensemble is not None or group_col is not None or (fmt not in (None, "parquet")) or proxy_col:
                raise click.UsageError(
                    "--stream reads a hedgetune Parquet file or folder as it is: it does not combine with "
                    "--ensemble, --group-col, --proxy-col or another --format"
                )
            if takes_auto:
                kwargs["ensemble_auto"] = False
            return fn(table=_scan(table_path, proxy_name, stream_prompts), table_path=table_path, **kwargs)
        if auto and (ensemble != "mean-std" or not takes_auto):
            raise click.UsageError("--ensemble-k auto needs --ensemble mean-std, and works with tune only")
        if ensemble is not None and proxy_name is not None:
            raise click.UsageError("--proxy and --ensemble both choose the ranking proxy: give one")
        try:
            table = _load(table_path, fmt, prompt_col, proxy_col, true_col, group_col, invalid, proxy_name)
            if ensemble is not None and not auto:
                table = with_ensemble(table, None, ensemble, _number(ensemble_k, "--ensemble-k"))
        except USER_ERRORS as exc:
            raise InputError(as_flags(str(exc))) from None
        if takes_auto:
            kwargs["ensemble_auto"] = auto
        return fn(table=table, table_path=table_path, **kwargs)

    wrapped: Any = with_table
    return _with_options(options, wrapped)


def _scan(table_path: str, proxy_name: str | None, chunk_prompts: int) -> Any:
    try:
        return scan_table(table_path, proxy_name, chunk_prompts=chunk_prompts)
    except (*USER_ERRORS, OSError) as exc:
        raise InputError(as_flags(str(exc))) from None


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{name} must be a number (or 'auto'), got {text!r}") from None


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
            help="Candidates per prompt of Soft Best-of-n (default 4) and of itp, rbon_kl, rbon_wd, rbon_len (default 8).",
        ),
        click.option(
            "--on",
            "sbon_on",
            type=click.Choice(["raw", "quantile"]),
            default=None,
            help="Soft Best-of-n: softmax on raw scores (default) or on within-pool quantiles.",
        ),
        click.option(
            "--column",
            "covariate",
            default=None,
            help="rbon_kl / rbon_len: the table column of log-probabilities (default mean_logprob) or lengths (default length).",
        ),
    ]

    @functools.wraps(fn)
    def with_mechanism(
        mechanism: str, sbon_n: int | None, sbon_on: str | None, covariate: str | None, **kwargs: Any
    ) -> Any:
        cls = lookup(mechanism)
        for option, value in (("n", sbon_n), ("on", sbon_on), ("column", covariate)):
            if value is not None and option not in option_names(cls):
                users = [name for name in names() if option in option_names(lookup(name))]
                raise click.UsageError(f"--{option} applies to -m {', '.join(users)} only, not to -m {mechanism}")
        try:
            template = make(mechanism, n=sbon_n, on=sbon_on, column=covariate)
        except USER_ERRORS as exc:
            raise InputError(as_flags(str(exc))) from None
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
        *_bootstrap_and_seed(1000),
    ]
    return _with_options(options, fn)


def _bootstrap_and_seed(default: int) -> list[Callable[[Any], Any]]:
    return [
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and the splits."
        ),
        click.option(
            "--bootstrap",
            type=click.IntRange(min=0),
            default=default,
            show_default=True,
            help="Bootstrap replicates over prompts.",
        ),
    ]


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


def proxy_chosen() -> bool:
    """Whether the user chose the ranking proxy (``--proxy`` or ``--ensemble``; else: every proxy)."""
    params = click.get_current_context().params
    return bool(params.get("proxy_name") or params.get("ensemble"))


def report_options(default_out: str) -> Callable[[F], F]:
    """Options of the commands that run the whole analysis (``plot``, ``report``)."""

    def decorate(fn: F) -> F:
        options = [
            click.option("--out", type=click.Path(file_okay=False), default=default_out, show_default=True),
            force_option,
            *_bootstrap_and_seed(300),
            click.option(
                "--repeats",
                type=click.IntRange(min=1),
                default=10,
                show_default=True,
                help="Out-of-sample splits.",
            ),
            quiet_option,
        ]
        return _with_options(options, fn)

    return decorate


force_option = click.option(
    "--force", is_flag=True, help="Overwrite existing output (otherwise it is refused)."
)

quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress bars or start-up messages (they are also off when "
    "the output is not a terminal)."
)


class _NoBar:
    """A progress bar that shows nothing (``--quiet``, or output to a file or a pipe)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, steps: int, current_item: Any = None) -> None:
        return None


def showing_progress(quiet: bool) -> bool:
    """Progress is shown unless ``--quiet``, and only when both output streams are terminals."""
    import sys

    return not quiet and sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(length: int, label: str, quiet: bool, item_show_func: Any = None) -> Any:
    """A ``click`` progress bar on standard error, or one that shows nothing (:func:`showing_progress`)."""
    import sys

    if not showing_progress(quiet):
        return _NoBar()
    return click.progressbar(length=length, label=label, file=sys.stderr, item_show_func=item_show_func,
                             show_eta=True, show_pos=True)


def announce(message: str, quiet: bool) -> None:
    """A start-up line on standard error (``loading the model...``), shown like progress."""
    if showing_progress(quiet):
        click.echo(message, err=True)


def claim_output(path: str | Path, force: bool) -> None:
    """Hold the output ``path`` for this run until the command ends (:func:`hedgetune._atomic.exclusive`:
    of several concurrent runs exactly one writes, the others exit 2; an unwritable or full folder
    is said before any work), then refuse an existing output without ``--force``."""
    click.get_current_context().with_resource(exclusive(path))
    require_free_space(path)
    refuse_to_overwrite(path, force)


def refuse_to_overwrite(path: str | Path, force: bool) -> None:
    """Outputs are never overwritten silently: an existing file, or a folder with files in it,
    needs ``--force``. (Every write is atomic, so a crash never leaves half a file.)"""
    target = Path(path)
    if force or not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        return
    kind = "folder" if target.is_dir() else "file"
    raise InputError(f"the {kind} {str(target)!r} already exists: pass --force to overwrite it")



def parse_floats(text: str, name: str) -> np.ndarray:
    try:
        return np.array([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise click.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from None



def budget_options(fn: F) -> F:
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
