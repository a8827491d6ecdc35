"""Serving commands: select among scored candidates, serve the packaged model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..ensembles import RULES
from ..mechanisms import Mechanism
from ._common import (
    InputError,
    announce,
    claim_output,
    emit_json,
    force_option,
    mechanism_options,
    quiet_option,
    user_errors,
)
from ._group import main


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



@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--model",
    default="smollm2-135m-instruct",
    show_default=True,
    help="A local model folder, or the packaged SmolLM2.",
)
@click.option("--max-queue", type=click.IntRange(min=0), default=4, show_default=True,
              help="Requests that may wait for the model; the next gets 429.")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=1024, show_default=True,
              help="The most tokens one request may ask for (n x max_tokens).")
@quiet_option
@user_errors
def serve(host: str, port: int, model: str, max_queue: int, max_batch_tokens: int, quiet: bool) -> None:
    """Serve a local model over the OpenAI completions and chat protocols (for pipelines and tests)."""
    import time

    from ..pipeline.backends import DEFAULT_MODEL, TransformersBackend, smollm2_converted
    from ..pipeline.serve import make_server

    started = time.perf_counter()
    if model == DEFAULT_MODEL and not smollm2_converted():
        announce("converting the packaged SmolLM2 to safetensors (once per machine, about 30 s)...", quiet)
    announce(f"loading {model}...", quiet)
    server = make_server(TransformersBackend(model=model), host, port, max_batch_tokens, max_queue)
    announce(f"loaded in {time.perf_counter() - started:.1f} s", quiet)
    click.echo(f"serving {model} on http://{host}:{server.server_address[1]}", err=True)
    server.serve_forever()


if __name__ == "__main__":
    main()


@main.command()
@click.option("--upstream", required=True, help="Base URL of an OpenAI-compatible server (vLLM, SGLang, ...).")
@click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False), default=None,
    help="A policy from `hedgetune tune --save-policy` (without one, requests choose with \"hedge\").",
)
@click.option(
    "--reward", multiple=True,
    help="The proxy that scores candidates (default: the policy's). Repeat it for an ensemble.",
)
@click.option(
    "--ensemble", type=click.Choice(RULES), default=None,
    help="How repeated --reward combine (default: the policy's recipe when its members match, else mean).",
)
@click.option("--ensemble-k", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="The std penalty k of --ensemble mean-std.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--upstream-api-key-env", default=None, help="Environment variable holding the upstream's API key.")
@click.option("--token-env", default=None, help="Environment variable holding the bearer token clients must send "
              "(then every route but /health needs it).")
@click.option("--public-metrics", is_flag=True, help="Serve /metrics without the token.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-candidates", type=click.IntRange(min=1, max=1024), default=64, show_default=True,
              help="The most candidates one request may cost (a request asking for more on average gets a 400).")
@click.option("--allow-override", type=click.Choice(["none", "parameter", "all"]), default="all", show_default=True,
              help="What a request's \"hedge\" may change: nothing (403), the policy's parameter only, or anything.")
@click.option("--out-of-support", type=click.Choice(["exclude", "clip", "allow"]), default=None,
              help="Candidates outside the policy's calibration or degenerate: leave them out of selection, clip "
              "their scores, or allow them (default: the policy's setting, else exclude).")
@click.option("--fallback", type=click.Choice(["reference", "error"]), default=None,
              help="When every candidate is excluded: answer the first non-degenerate one, or 502 "
              "(default: the policy's setting, else reference).")
@click.option("--deadline", type=click.FloatRange(min=0.1, max=600), default=90.0, show_default=True,
              help="Seconds one request may take in all: every upstream attempt, retries and scoring.")
@click.option("--retries", type=click.IntRange(min=0, max=10), default=2, show_default=True,
              help="Retries of an upstream call (429, 5xx, connection errors), inside the deadline.")
@click.option(
    "--log", "log_dir", type=click.Path(file_okay=False), default=None,
    help="Append every decision to Parquet shards here (0600; see `hedgetune log-table`, `hedgetune monitor`).",
)
@user_errors
def gateway(
    upstream: str,
    policy_path: str | None,
    reward: tuple[str, ...],
    ensemble: str | None,
    ensemble_k: float,
    host: str,
    port: int,
    upstream_api_key_env: str | None,
    token_env: str | None,
    public_metrics: bool,
    max_concurrency: int,
    max_candidates: int,
    allow_override: str,
    out_of_support: str | None,
    fallback: str | None,
    deadline: float,
    retries: int,
    log_dir: str | None,
) -> None:
    """An OpenAI-compatible endpoint that applies the tuned policy: draw candidates from the
    upstream, score them, leave out those unlike the calibration, select, answer with the chosen
    one (needs the 'gateway' extra)."""
    import os

    import uvicorn

    from ..gateway.app import Limits, make_app
    from ..gateway.policy import Policy

    def secret(name: str | None) -> str | None:
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            raise InputError(f"the environment variable {name} is not set")
        return value

    if policy_path:
        loaded = Policy.load(policy_path)  # a broken policy file stops the start, with its message
        if loaded.calibration is None:
            click.echo("warning: the policy carries no calibration, so out-of-support candidates cannot be told "
                       "(re-save it with `hedgetune tune --save-policy`)", err=True)
    token = secret(token_env)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host} without --token-env: anyone who reaches it spends the upstream", err=True)
    limits = Limits(max_concurrency=max_concurrency, max_candidates=max_candidates, deadline_s=deadline,
                    retries=retries, allow_override=allow_override)
    app = make_app(  # the policy file is reloaded when it changes
        upstream,
        policy_path,
        reward,
        ensemble=ensemble,
        ensemble_k=ensemble_k,
        limits=limits,
        api_key=secret(upstream_api_key_env),
        token=token,
        public_metrics=public_metrics,
        out_of_support=out_of_support,
        fallback=fallback,
        log_dir=log_dir,
    )
    click.echo(f"hedgetune gateway on http://{host}:{port} -> {upstream}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5, h11_max_incomplete_event_size=65536)


@main.command()
@click.argument("log_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The policy the gateway served (its calibration is the reference).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write monitor.html and monitor.png here.")
@user_errors
def monitor(log_dir: str, policy_path: str, as_json: bool, out: str | None) -> None:
    """The label-free hacking monitor over a gateway's decision log: drift of live scores from the
    calibration (PSI), candidates outside it, choices piling up at its top, duplicates."""
    from ..gateway.monitor import monitor_log, write_page
    from ..gateway.policy import Policy

    try:
        signals, quantiles = monitor_log(log_dir, Policy.load(policy_path))
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    if out is not None:
        page = write_page(signals, quantiles, out)
        if not as_json:
            click.echo(f"page: {page}", err=True)
    if as_json:
        emit_json(signals.to_dict())
        return
    data = signals.to_dict()
    click.echo(f"{data['requests']} requests, {data['candidates']} candidates")
    for verdict in data["verdicts"] or ["all quiet: live traffic looks like the calibration"]:
        click.echo(f"  {verdict}")
    psi = data["score_drift_psi"]
    click.echo(f"  score drift PSI {'n/a' if psi is None else f'{psi:.3f}'}; outside support "
               f"{100 * data['out_of_support_share']:.1f}% {data['out_of_support']}; duplicates {data['duplicates']}")


@main.command("log-table")
@click.argument("log_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--gold", required=True, type=click.Path(dir_okay=False, exists=True),
              help="JSONL of {request_id, candidate, true_reward}.")
@click.option("--missing", type=click.Choice(["raise", "drop"]), default="raise", show_default=True,
              help="Logged candidates without a gold label: refuse, or drop them and say how many.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The calibration table (Parquet).")
@force_option
@user_errors
def log_table(log_dir: str, gold: str, missing: str, out: str, force: bool) -> None:
    """A calibration table from the gateway's decision log and gold labels: re-tune on traffic."""
    from ..gateway.log import table_from_log
    from ..io import write_table

    claim_output(out, force)
    table = table_from_log(log_dir, gold, missing)
    write_table(table, out)
    if table.dropped:
        click.echo(f"dropped {table.dropped} candidates (unlabelled, or alone in their request)", err=True)
    click.echo(f"{table} -> {out}")
