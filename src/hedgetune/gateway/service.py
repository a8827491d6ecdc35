"""The hedging service: draw candidates, score them, guard the support, select, account, log.

One :class:`HedgeService` per gateway. For a request served under a mechanism it

1. draws the number of candidates (Best-of-n: n; Best-of-Poisson: 1 + Poisson(mu); ...), capped
   at ``max_candidates``;
2. gets them from the upstream: one call asking for all of them, then, if the upstream returned
   fewer (``transformers serve`` ignores ``n``), the rest as concurrent single calls. With a client
   ``seed``, candidate k gets its own seed derived from (seed, k), so candidates differ and the
   answer is reproducible; a dead upstream fails the first call and is not fanned out to;
3. scores them (a scorer never invents a score: a candidate it cannot score is *missing*);
4. places each candidate in the policy's calibration and flags those outside it or degenerate
   (:mod:`hedgetune.gateway.support`); flagged candidates are excluded, clipped or allowed as the
   serving mode says;
5. selects among the eligible candidates with the mechanism's own ``select``. If none is eligible
   it falls back: ``reference`` answers the first non-degenerate candidate (a plain draw of the
   upstream, the un-hedged reference) and says so in ``hedgetune.fallback``; ``error`` (or no
   non-degenerate candidate) answers 502 naming what every candidate lacked;
6. answers with the chosen candidate, ``usage`` summed over every call (counted from
   log-probabilities, or estimated and labelled so, when the upstream sends none), and the
   decision under ``hedgetune``; logs it and feeds the monitor.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..mechanisms import Mechanism
from ..protocol import ApiError, Deadline
from .log import DecisionLog
from .monitor import LiveMonitor
from .protocol import ROUTES, HedgeRequest
from .scoring import ScoringFailed, choice_logprobs, choice_text
from .support import DEGENERATE, Calibration, apply_mode, reasons
from .upstream import RetryingUpstream


@dataclass
class Limits:
    """Request limits, costs and guards (all configurable from the command line)."""

    max_body_bytes: int = 1 << 20
    max_candidates: int = 64
    max_tokens: int = 8192
    max_concurrency: int = 32
    max_queue: int = 256
    #: One bound on everything a request does: every upstream attempt, retries and scoring.
    deadline_s: float = 90.0
    retries: int = 2
    backoff_s: float = 0.2
    #: What a request's "hedge" may change (``none``, ``parameter``, ``all``).
    allow_override: str = "all"
    #: Serving mode and fallback when the policy names none (``hedgetune.gateway.support``).
    out_of_support: str = "exclude"
    fallback: str = "reference"


def candidate_seed(seed: int, k: int) -> int:
    """The seed of candidate ``k`` of a request whose client sent ``seed`` (below 2**63)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class HedgeService:
    def __init__(self, upstream: RetryingUpstream, limits: Limits, rng: np.random.Generator,
                 log: DecisionLog | None, monitor: LiveMonitor) -> None:
        self.upstream, self.limits, self.rng, self.log, self.monitor = upstream, limits, rng, log, monitor
        self.candidates = 0
        # Whether the upstream was seen to return fewer choices than the n it was asked for: then
        # the candidates are requested one by one, concurrently.
        self.ignores_n = {kind: False for kind in ROUTES}

    # ------------------------------------------------------------------ drawing
    async def draw(self, request: HedgeRequest, body: dict[str, Any], count: int, deadline: Deadline
                   ) -> tuple[list[dict[str, Any]], list[tuple[int, dict[str, Any]]], int]:
        """The replies, the (reply index, choice) of each candidate, and how many calls failed."""

        def call(k: int, n: int) -> Any:
            one = {**body, "n": n}
            if request.seed is not None:
                one["seed"] = candidate_seed(request.seed, k)
            return self.upstream.call(request.route, one, deadline)

        replies: list[dict[str, Any]] = []
        if not (count > 1 and self.ignores_n[request.kind]):
            replies.append(await call(0, count))  # a dead upstream fails here, before any fan-out
            got = len(replies[0]["choices"])
            if count > 1 and got < count:
                self.ignores_n[request.kind] = True
        else:
            got = 0
        failed = 0
        if got < count:
            results = await asyncio.gather(*(call(k, 1) for k in range(got, count)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            for error in errors:
                if not isinstance(error, ApiError) or error.status not in (502, 504):
                    raise error
            replies += [r for r in results if isinstance(r, dict)]
            failed = len(errors)
            if not replies:
                raise errors[-1]
        choices = [(i, c) for i, r in enumerate(replies) for c in r["choices"] if isinstance(c, dict)][:count]
        if not choices:
            raise ApiError(502, "no candidate arrived from the upstream")
        return replies, choices, failed

    # ------------------------------------------------------------------ serving
    async def serve(self, request: HedgeRequest, mechanism: Mechanism, scorer: Any, calibration: Calibration | None,
                    mode: str, fallback: str, deadline: Deadline) -> dict[str, Any]:
        drawn = int(mechanism.draw_n(1, self.rng)[0])
        count = min(drawn, self.limits.max_candidates)
        body = dict(request.body)
        if scorer.needs_logprobs:
            body["logprobs"] = True if request.kind == "chat" else max(1, int(body.get("logprobs") or 1))
        replies, choices, failed = await self.draw(request, body, count, deadline)
        self.candidates += len(choices)
        texts = [choice_text(c) for _, c in choices]
        logprobs = [choice_logprobs(c) for _, c in choices]
        tokens = [None if lp is None else len(lp) for lp in logprobs]
        scores, problem = await self._score(scorer, request.prompt, texts, logprobs, deadline)
        flags = reasons(calibration, texts, tokens, scores)
        used, kept = apply_mode(mode, calibration, scores, flags)
        seen: set[str] = set()
        duplicate = []
        for text in texts:
            duplicate.append(text in seen)
            seen.add(text)
        taken = None
        if kept:
            pick = int(mechanism.select(used[kept][None, :], rng=self.rng)[0])
            chosen = kept[pick]
        else:
            chosen = self._fallback(fallback, flags, scorer, logprobs, problem)
            taken = "reference"
        quantiles = None if calibration is None else calibration.quantile(scores)
        excluded = [{"candidate": k, "reason": r} for k, r in enumerate(flags) if r is not None and k not in kept]
        usage, accounting = _usage(replies, choices, tokens, texts, request.prompt)
        decision = {
            "mechanism": mechanism.name, "theta": mechanism.theta, "options": mechanism.options, "proxy": scorer.name,
            "candidates": len(choices), "requested": count, "drawn": drawn, "failed": failed, "capped": drawn > count,
            "scores": [None if not math.isfinite(s) else float(s) for s in scores], "chosen": chosen,
            "excluded": excluded, "flagged": [{"candidate": k, "reason": r} for k, r in enumerate(flags) if r is not None],
            "support": "calibrated" if calibration is not None else "uncalibrated", "out_of_support": mode,
            "fallback": taken, "duplicates": int(sum(duplicate)),
            "usage": accounting,
        }
        if problem:
            decision["scoring_error"] = problem
        reply_index, choice = choices[chosen]
        out = {k: v for k, v in replies[reply_index].items() if k not in ("choices", "usage")}
        choice = {**choice, "index": 0}
        if not request.client_logprobs:
            choice.pop("logprobs", None)
        out["choices"] = [choice]
        out["usage"] = usage
        out["hedgetune"] = decision
        self.monitor.observe(quantiles, flags, decision["duplicates"], chosen, kept, len(texts[chosen]))
        if self.log is not None:
            rows = [{"response": t, "score": s, "quantile": None if quantiles is None else quantiles[k],
                     "flag": flags[k], "eligible": k in kept, "duplicate": duplicate[k], "chosen": k == chosen}
                    for k, (t, s) in enumerate(zip(texts, scores, strict=True))]
            decision["request_id"] = self.log.add(request.route, request.prompt, request.context, rows, decision)
        return out

    async def _score(self, scorer: Any, prompt: str, texts: list[str], logprobs: list[list[float] | None],
                     deadline: Deadline) -> tuple[Any, str | None]:
        from starlette.concurrency import run_in_threadpool

        try:
            scores = await asyncio.wait_for(
                run_in_threadpool(scorer.score, prompt, texts, logprobs, max(deadline.remaining(), 0.01)),
                timeout=max(deadline.remaining(), 0.01),
            )
        except TimeoutError:
            return np.full(len(texts), np.nan), f"the scorer did not answer within the deadline of {deadline.seconds:g} s"
        except (ScoringFailed, ValueError) as exc:
            return np.full(len(texts), np.nan), str(exc)
        return np.asarray(scores, dtype=float), None

    def _fallback(self, fallback: str, flags: list[str | None], scorer: Any, logprobs: list[Any], problem: str | None) -> int:
        """The candidate answered when none is eligible, or a 502 naming why."""
        counts = Counter(r for r in flags if r is not None)
        why = ", ".join(f"{n} {r}" for r, n in counts.most_common())
        if counts.get("score_missing") == len(flags):
            if problem:
                why = f"the scorer failed: {problem}"
            elif scorer.needs_logprobs and all(lp is None for lp in logprobs):
                why = f"the upstream sent no log-probabilities, which the proxy {scorer.name!r} needs"
            else:
                why = f"the proxy {scorer.name!r} could score no candidate"
        if fallback == "reference":
            for k, reason in enumerate(flags):
                if reason not in DEGENERATE:
                    return k
        raise ApiError(502, f"no candidate could be selected ({why}); fallback: {fallback}", code="no_eligible_candidate")


def _usage(replies: list[dict[str, Any]], choices: list[tuple[int, dict[str, Any]]], tokens: list[int | None],
           texts: list[str], prompt: str) -> tuple[dict[str, int], dict[str, Any]]:
    """Summed usage and where its numbers come from: ``upstream`` (every call reported usage),
    ``counted`` (completion tokens from the log-probabilities' token counts) or ``estimated``
    (about 4 characters a token, labelled so), with each candidate's completion tokens."""
    per_reply = Counter(i for i, _ in choices)
    per_candidate: list[dict[str, Any]] = []
    for (i, _), count, text in zip(choices, tokens, texts, strict=True):
        usage = replies[i].get("usage")
        reported = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if count is not None:
            per_candidate.append({"completion_tokens": count, "source": "logprobs"})
        elif per_reply[i] == 1 and isinstance(reported, int) and _integer(reported):
            per_candidate.append({"completion_tokens": reported, "source": "upstream"})
        else:
            per_candidate.append({"completion_tokens": math.ceil(len(text) / 4), "source": "estimate"})
    reported_usage: list[dict[str, Any]] = [r["usage"] for r in replies if isinstance(r.get("usage"), dict)]
    if len(reported_usage) == len(replies) and all(
        _integer(u.get("prompt_tokens")) and _integer(u.get("completion_tokens")) for u in reported_usage
    ):
        prompt_tokens = sum(int(u["prompt_tokens"]) for u in reported_usage)
        completion_tokens = sum(int(u["completion_tokens"]) for u in reported_usage)
        sources = {"prompt_source": "upstream", "completion_source": "upstream"}
    else:
        prompt_tokens = len(replies) * math.ceil(len(prompt) / 4)
        completion_tokens = sum(c["completion_tokens"] for c in per_candidate)
        counted = all(c["source"] != "estimate" for c in per_candidate)
        sources = {"prompt_source": "estimated", "completion_source": "counted" if counted else "estimated"}
    total = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    return total, {**sources, "candidates": per_candidate}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
