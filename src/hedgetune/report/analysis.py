"""The main job on one calibration table: curves, HedgeTune and out-of-sample checks per proxy,
then figures and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from .._jsonable import jsonable
from ..curves import Curve, as_pools, curve
from ..decision import DEFAULT_MECHANISMS as DECIDED
from ..decision import DEFINITIONS, Decision, decision_from
from ..diagnose import Diagnosis, diagnose_curve
from ..mechanisms import Mechanism, SetRule, make
from ..pools import Pools
from ..table import RewardTable
from ..tune import OutOfSample, TuneResult, evaluate, tune
from . import figures

#: The mechanisms of a report: key -> (name, keyword arguments): those a decision weighs, and the
#: tilted frontier (shown for reference; it is not a sampler).
DEFAULT_MECHANISMS: dict[str, tuple[str, dict[str, Any]]] = {**DECIDED, "tilted": ("tilted", {})}


def progress_steps(proxies: int) -> int:
    """How many times :func:`analyse` and :func:`write_figures` report progress for a table of
    ``proxies`` proxies: each mechanism's tuning, the held-out check and the figures per proxy, and
    the out-of-sample figure."""
    return proxies * (len(DEFAULT_MECHANISMS) + 2) + 1


@dataclass
class ProxyAnalysis:
    proxy: str
    curves: dict[str, Curve] = field(default_factory=dict)
    tuned: dict[str, TuneResult] = field(default_factory=dict)
    diagnoses: dict[str, Diagnosis] = field(default_factory=dict)
    out_of_sample: OutOfSample | None = None
    #: Analyses the table cannot support (a mechanism needing larger pools, too few prompts to
    #: split), with the reason: reported, never a crash.
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class TableAnalysis:
    name: str
    description: str
    table: RewardTable
    proxies: dict[str, ProxyAnalysis]

    def decision(self) -> Decision:
        """The table's one decision, from the tunings and held-out checks computed here."""
        results = {(proxy, key): r for proxy, pa in self.proxies.items() for key, r in pa.tuned.items() if key in DECIDED}
        held = {(proxy, "bop"): pa.out_of_sample for proxy, pa in self.proxies.items()
                if pa.out_of_sample is not None and "bop" in pa.tuned}
        return decision_from(results, held)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (proxy, mechanism) for the report's table and ``--json``."""
        out = []
        for proxy, pa in self.proxies.items():
            for key, r in pa.tuned.items():
                d = pa.diagnoses[key]
                out.append(
                    {
                        "proxy": proxy,
                        "mechanism": key,
                        "parameter": r.parameter,
                        "theta": r.theta,
                        "theta_ci": list(r.theta_ci),
                        "true_reward": r.true_reward,
                        "true_reward_ci": list(r.true_reward_ci),
                        "reference_true_reward": r.reference_true_reward,
                        "unhedged_theta": r.unhedged_theta,
                        "unhedged_true_reward": r.unhedged_true_reward,
                        "conservative_theta": r.conservative_theta,
                        "recommended_theta": r.recommended_theta,
                        "recommended_rule": r.recommended_rule,
                        "regime_note": r.regime_note,
                        "regime": r.regime,
                        "theta_ci_note": r.theta_ci_note,
                        "share_of_gain_lost": d.share_of_gain_lost,
                        "sentence": d.sentence(),
                    }
                )
        return out


def analyse(
    table: RewardTable,
    name: str,
    *,
    description: str = "",
    proxies: Sequence[str] | None = None,
    mechanisms: dict[str, tuple[str, dict[str, Any]]] | None = None,
    out_of_sample_proxies: Sequence[str] | None = None,
    repeats: int = 10,
    bootstrap: int = 300,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TableAnalysis:
    """Curves and HedgeTune for every (proxy, mechanism); out-of-sample checks of Best-of-Poisson."""
    chosen = list(proxies or table.proxy_names)
    mechs = mechanisms or DEFAULT_MECHANISMS
    oos = list(out_of_sample_proxies if out_of_sample_proxies is not None else chosen)
    result: dict[str, ProxyAnalysis] = {}
    for proxy in chosen:
        pa = ProxyAnalysis(proxy)
        sorted_pools: dict[tuple[str, ...], Pools] = {}  # sort once per set of extra columns
        for key, (mech_name, kwargs) in mechs.items():
            if progress:
                progress(f"{name}: {proxy} / {key}")
            template: Mechanism = make(mech_name, **kwargs)
            extras = template.extras() if isinstance(template, SetRule) else ()
            try:
                if extras not in sorted_pools:
                    sorted_pools[extras] = as_pools(table, proxy, template)
                pools = sorted_pools[extras]
                tuned = tune(pools, template, bootstrap=bootstrap, seed=seed)
                grid = _report_grid(template, tuned)
                c = curve(pools, template, grid, bootstrap=bootstrap, seed=seed)
            except ValueError as exc:  # TableError too: this table cannot support this analysis
                pa.skipped[key] = str(exc)
                continue
            pa.curves[key], pa.tuned[key], pa.diagnoses[key] = c, tuned, diagnose_curve(c, tuned)
        if proxy in oos:
            if progress:
                progress(f"{name}: {proxy} / out of sample")
            try:
                pa.out_of_sample = evaluate(
                    table, "bop", proxy=proxy, repeats=repeats, seed=seed, bootstrap=min(bootstrap, 200)
                )
            except ValueError as exc:
                pa.skipped["out of sample"] = str(exc)
        result[proxy] = pa
    return TableAnalysis(name, description, table, result)


def _report_grid(template: Mechanism, tuned: TuneResult) -> np.ndarray:
    lo, hi = tuned.search_range
    if template.integer_parameter:
        return np.unique(np.round(np.geomspace(1, hi, 40)))
    return np.unique(np.concatenate([[lo], np.geomspace(max(hi * 1e-4, 1e-3), hi, 48), [tuned.theta]]))


# ------------------------------------------------------------------------------------- output
def summary_lines(analysis: TableAnalysis) -> list[str]:
    """What a user must know, in a few sentences: the decision first."""
    lines = [f"{analysis.name}: {analysis.table.n_prompts} prompts, {analysis.table.n_responses} responses",
             f"  {analysis.decision().sentence()}"]
    for proxy, pa in analysis.proxies.items():
        bon, bop = pa.diagnoses.get("bon"), pa.tuned.get("bop")
        parts = []
        if bon is not None:
            parts.append(bon.sentence())
        if bop is not None:
            note = " (uninformative: more prompts needed)" if bop.theta_ci_note.startswith("uninformative") else ""
            parts.append(
                f"Best-of-Poisson: mu = {bop.theta:.3g} [{bop.theta_ci[0]:.3g}, {bop.theta_ci[1]:.3g}]{note}, "
                f"true reward {bop.true_reward:.4f} vs {bop.reference_true_reward:.4f} at the reference"
            )
        if pa.out_of_sample is not None:
            s = pa.out_of_sample.summary()
            parts.append(
                f"held out: tuned {s['tuned']['mean']:.4f}, recommended {s['recommended']['mean']:.4f}, "
                f"un-hedged {s['unhedged']['mean']:.4f}, "
                f"oracle {s['oracle']['mean']:.4f}"
            )
        lines.append(f"  [{proxy}] " + "; ".join(parts))
    return lines


def write_figures(
    analysis: TableAnalysis, out: Path, progress: Callable[[str], None] | None = None
) -> dict[str, list[Path]]:
    """Every figure of one table, as PNG and SVG, keyed by a short name (``progress`` is told of
    each proxy's figures and the out-of-sample one)."""
    written: dict[str, list[Path]] = {}
    slug = figures.safe_name(analysis.name.lower().replace(" ", "_"))
    for proxy, pa in analysis.proxies.items():
        if not pa.curves:  # nothing this table could support for this proxy
            if progress:
                progress(f"{analysis.name}: {proxy} figures")
            continue
        stem = f"{slug}_{figures.safe_name(proxy)}"  # names from data never leave `out`
        fig = figures.reward_vs_kl(
            pa.curves, pa.tuned, title=f"{analysis.name}, proxy '{proxy}': true reward against KL"
        )
        written[f"{proxy}/reward_vs_kl"] = figures.save(fig, out / f"{stem}_reward_vs_kl")
        key = "bop" if "bop" in pa.curves else next(iter(pa.curves))
        fig = figures.hacking_curve(
            pa.curves[key],
            pa.tuned[key],
            title=f"{analysis.name}, proxy '{proxy}': {pa.curves[key].template.short_label()}",
        )
        written[f"{proxy}/curve"] = figures.save(fig, out / f"{stem}_{key}_curve")
        if progress:
            progress(f"{analysis.name}: {proxy} figures")
    oos = {p: pa.out_of_sample for p, pa in analysis.proxies.items() if pa.out_of_sample is not None}
    if oos:
        fig = figures.out_of_sample(
            oos, title=f"{analysis.name}: Best-of-Poisson tuned on half the prompts, scored on the rest"
        )
        written["out_of_sample"] = figures.save(fig, out / f"{slug}_out_of_sample")
    if progress:
        progress(f"{analysis.name}: out-of-sample figure")
    return written


def _img(path: Path) -> str:
    """An embedded figure that opens full size (the PNG beside the report) on click."""
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.name)
    return (f'<figure><a href="{name}" target="_blank" title="open full size">'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}"></a></figure>')


def write_report(
    analyses: Sequence[TableAnalysis],
    out: str | Path,
    *,
    title: str = "hedgetune report",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Figures, ``summary.json`` and a self-contained ``report.html`` (figures embedded)."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    answers = [f"<li><b>{html.escape(a.name)}</b>: {html.escape(a.decision().sentence())}</li>" for a in analyses]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<div class='answer'><b>What to deploy</b><ul>{''.join(answers)}</ul></div>",
        "<p class='defs'>" + "<br>".join(f"<b>{k}</b>: {html.escape(v)}" for k, v in DEFINITIONS.items())
        + "<br><b>hacking</b>: the true reward falls after its peak by more than one bootstrap standard error "
        "(highlighted rows)<br><b>uninformative</b>: an interval spanning the whole searched range (more prompts "
        "needed)</p>",
        "<p>How hard should we optimise the proxy? Each mechanism's true reward is what a deployment drawing "
        "fresh candidates gets, estimated without replacement (unbiased, no Monte Carlo) on the calibration "
        "pools, up to the largest parameter the pools support; HedgeTune finds where it peaks (95% bootstrap "
        "intervals over prompts). The tilted policy, a frontier rather than a sampler, is shown with its "
        "plug-in estimate.</p>",
    ]
    summary: dict[str, Any] = {}
    for analysis in analyses:
        written = write_figures(analysis, out_dir, progress)
        rows = analysis.rows()
        summary[analysis.name] = {
            "table": analysis.table.summary(),
            "results": rows,
            "out_of_sample": {
                p: pa.out_of_sample.to_dict()
                for p, pa in analysis.proxies.items()
                if pa.out_of_sample is not None
            },
        }
        decision = analysis.decision()
        summary[analysis.name]["decision"] = decision.to_dict()
        body.append(f"<h2>{html.escape(analysis.name)}</h2>")
        body.append(f"<p class='answer'><b>Recommendation:</b> {html.escape(decision.sentence())}</p>")
        body.append(f"<p>{html.escape(analysis.description)}</p>")
        body.append("<h3>Proxies ranked</h3>" + _decision_table(decision))
        steps = decision.next_steps()
        if steps:
            body.append("<p><b>What to do next</b></p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in steps) + "</ul>")
        body.append("<details><summary>Every mechanism and the tilted frontier</summary>" + _rows_table(rows) + "</details>")
        if "out_of_sample" in written:
            body.append("<h3>Out of sample</h3><div class='figs'>" + _img(written["out_of_sample"][0]) + "</div>"
                        + _oos_table(analysis))
        for proxy in analysis.proxies:
            prov = analysis.table.provenance.get(proxy, "")
            body.append(
                f"<h3>Proxy <code>{html.escape(proxy)}</code></h3><p class='prov'>{html.escape(prov)}</p>"
            )
            body.append(
                "<ul>"
                + "".join(
                    f"<li>{html.escape(d.sentence())}</li>"
                    for d in analysis.proxies[proxy].diagnoses.values()
                )
                + "</ul>"
            )
            skipped = analysis.proxies[proxy].skipped
            if skipped:
                body.append("<p class='prov'>Not analysed: " + "; ".join(
                    f"{html.escape(k)} ({html.escape(v)})" for k, v in skipped.items()) + "</p>")
            if f"{proxy}/reward_vs_kl" in written:
                body.append("<div class='figs'>" + _img(written[f"{proxy}/reward_vs_kl"][0])
                            + _img(written[f"{proxy}/curve"][0]) + "</div>")
        truth = analysis.table.provenance.get("true_reward", "")
        if truth:
            body.append(f"<p class='prov'>True reward: {html.escape(truth)}</p>")
    atomic_write_text(out_dir / "summary.json", json.dumps(jsonable(summary), indent=1))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1em;color:#222}}
.scroll{{overflow-x:auto;max-width:100%}}
table{{border-collapse:collapse;font-size:13px;margin:0.5em 0;width:100%}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;overflow-wrap:break-word}}td.v{{overflow-wrap:anywhere;min-width:12em}}table.wide td,table.wide th{{overflow-wrap:anywhere}}
th{{background:#f3f3f3}}td.l{{text-align:left}}.prov{{color:#666;font-size:12px}}
tr.hack td{{background:#ffe4dc}}.answer{{background:#eef6ee;border-left:4px solid #2a7a2a;padding:0.5em 1em}}
.defs{{font-size:13px;color:#333}}figure{{margin:4px 0}}figure img{{width:100%;height:auto;cursor:zoom-in}}
.figs{{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:8px}}
@media (max-width:900px){{.figs{{grid-template-columns:1fr}}table{{font-size:12px}}}}</style></head><body>{"".join(body)}
<p class="prov">Method: Khalaf et al., Inference-Time Reward Hacking in Large Language Models (arXiv 2506.19248).</p>
</body></html>"""
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path


def _fmt(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _signed(x: float) -> str:
    """``+0.0123``; a value that rounds to zero reads ``+0.0000``, never ``-0.0000``."""
    return f"{round(x, 4) + 0.0:+.4f}"


def _decision_table(decision: Decision) -> str:
    """The decision's rows, ranked (held-out gain where measured, else the gain's lower bound)."""
    head = ("<tr><th>proxy</th><th>mechanism</th><th>recommended θ</th><th>gain over the reference [95% CI]</th>"
            "<th>held-out gain</th><th>samples</th><th>verdict</th></tr>")
    cells = []
    for r in decision.ranked():
        cls = " class='hack'" if r.regime == "rise-then-fall" else ""
        held = "–" if r.held_out_gain is None else f"{_signed(r.held_out_gain)} ± {r.held_out_gain_se or 0:.4f}"
        gain = "0 (reference)" if not r.sure else f"{r.gain:+.4f} [{r.gain_ci[0]:+.4f}, {r.gain_ci[1]:+.4f}]"
        verdict = r.verdict if r.servable else r.verdict + " (the gateway cannot serve it: tune on raw scores to deploy)"
        cells.append(
            f"<tr{cls}><td class='l'>{html.escape(r.proxy)}</td><td class='l'>{html.escape(r.label)}</td>"
            f"<td>{r.parameter} = {_fmt(r.recommended_theta)}</td><td>{gain}</td><td>{held}</td>"
            f"<td>{r.expected_samples:.3g}</td><td class='l v'>{html.escape(verdict)}</td></tr>"
        )
    return "<div class='scroll'><table>" + head + "".join(cells) + "</table></div>"


def _rows_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>proxy</th><th>mechanism</th><th>tuned θ [95% CI]</th><th>true reward [95% CI]</th>"
        "<th>reference</th><th>un-hedged θ → true reward</th><th>conservative θ</th><th>recommended θ</th>"
        "<th>regime</th></tr>"
    )
    cells = []
    for r in rows:
        cls = " class='hack'" if r["regime"] == "rise-then-fall" else ""
        note = " (uninformative)" if r.get("theta_ci_note", "").startswith("uninformative") else ""
        cells.append(
            f"<tr{cls}><td class='l'>{html.escape(r['proxy'])}</td><td class='l'>{html.escape(r['mechanism'])}</td>"
            f"<td>{r['parameter']} = {_fmt(r['theta'])} [{_fmt(r['theta_ci'][0])}, {_fmt(r['theta_ci'][1])}]{note}</td>"
            f"<td>{_fmt(r['true_reward'])} [{_fmt(r['true_reward_ci'][0])}, {_fmt(r['true_reward_ci'][1])}]</td>"
            f"<td>{_fmt(r['reference_true_reward'])}</td><td>{_fmt(r['unhedged_theta'])} → {_fmt(r['unhedged_true_reward'])}</td>"
            f"<td>{_fmt(r['conservative_theta'])}</td><td>{_fmt(r['recommended_theta'])}</td>"
            f"<td class='l'>{html.escape(r['regime'])}</td></tr>"
        )
    return "<div class='scroll'><table class='wide'>" + head + "".join(cells) + "</table></div>"


def _oos_table(analysis: TableAnalysis) -> str:
    head = (
        "<tr><th>proxy</th><th>reference</th><th>un-hedged</th><th>HedgeTune</th><th>conservative</th>"
        "<th>recommended</th><th>oracle</th></tr>"
    )
    cells = []
    for proxy, pa in analysis.proxies.items():
        if pa.out_of_sample is None:
            continue
        s = pa.out_of_sample.summary()
        vals = "".join(
            f"<td>{s[k]['mean']:.4f} ± {s[k]['se']:.4f}</td>"
            for k in ("reference", "unhedged", "tuned", "conservative", "recommended", "oracle")
        )
        cells.append(f"<tr><td class='l'>{html.escape(proxy)}</td>{vals}</tr>")
    return "<table>" + head + "".join(cells) + "</table>"
