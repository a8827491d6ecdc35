"""The gateway's request model: an OpenAI request body validated once, at the boundary.

:func:`parse_request` turns the raw body of ``/v1/chat/completions`` or ``/v1/completions`` into a
:class:`HedgeRequest`, or raises :class:`~hedgetune.protocol.ApiError` (400 or 413) naming the
field. :func:`parse_hedge` turns the request's ``"hedge"`` object into a mechanism, within what the
deployment allows (``--allow-override``) and can pay for (``--max-candidates``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..mechanisms import Mechanism, lookup, make
from ..mechanisms.registry import option_names
from ..mechanisms.registry import servable as check_servable
from ..protocol import (
    ApiError,
    RequestError,
    check_body,
    check_chat,
    check_completion,
    message_text,
    parse_body,
)

ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
#: What a request's ``"hedge"`` may change: nothing, the tuned parameter only, or anything.
OVERRIDES = ("none", "parameter", "all")
#: The largest parameter a request may ask for (n is bounded by the candidate cap before that).
MAX_THETA = 1e6


@dataclass(frozen=True)
class HedgeRequest:
    """One validated request.

    ``body`` is what goes upstream (no ``hedge``, ``stream`` or ``stream_options``); ``hedge`` is
    ``None`` (serve the policy), ``False`` (pass through) or the override object; ``prompt`` is
    the text the scorer sees (a lone user message as it is, else the whole conversation as
    ``role: content`` turns) and ``context`` the request's whole context as JSON, for the log.
    """

    kind: str
    body: dict[str, Any]
    hedge: Any
    stream: bool
    seed: int | None
    client_logprobs: bool
    prompt: str
    context: str

    @property
    def route(self) -> str:
        return ROUTES[self.kind]


def parse_request(kind: str, raw: bytes, max_bytes: int, max_n: int, max_tokens: int) -> HedgeRequest:
    try:
        body = parse_body(raw, max_bytes)
        check_body(body, max_n, max_tokens)
        hedge = body.pop("hedge", None)
        if hedge is not None and hedge is not False and not isinstance(hedge, dict):
            raise RequestError(400, '"hedge" must be false or an object with a "mechanism" name', "hedge")
        if kind == "chat":
            check_chat(body)
        else:
            check_completion(body, single_prompt=hedge is not False)
        if hedge is not False and body.get("n", 1) != 1:
            raise RequestError(400, "a hedged request returns one selected response: leave n at 1", "n")
    except RequestError as exc:
        raise ApiError(exc.status, exc.message, param=exc.param) from None
    stream = bool(body.pop("stream", False))
    body.pop("stream_options", None)
    if kind == "chat":
        logprobs = bool(body.get("logprobs"))
        messages = body["messages"]
        context = json.dumps(messages, ensure_ascii=False)
        prompt = _conversation(messages)
    else:
        logprobs = body.get("logprobs") is not None
        context = json.dumps(body.get("prompt"), ensure_ascii=False)
        prompt = body["prompt"] if isinstance(body.get("prompt"), str) else context
    return HedgeRequest(kind, body, hedge, stream, body.get("seed"), logprobs, prompt, context)


def _conversation(messages: list[dict[str, Any]]) -> str:
    """A lone user message as it is (as calibration prompts are scored); else every turn."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return message_text(messages[0].get("content"))
    return "\n\n".join(f"{m['role']}: {message_text(m.get('content'))}" for m in messages)


def parse_hedge(hedge: dict[str, Any], served: Mechanism | None, allow: str, max_candidates: int) -> Mechanism:
    """The mechanism a ``"hedge"`` object asks for: ``{"mechanism": "bon", "n": 4}``,
    ``{"mechanism": "bop", "mu": 3}``, ``{"n": 6}`` (the served mechanism at another parameter).

    Errors: 403 for an override the deployment forbids, 400 (naming ``param``) for an unknown key,
    a non-number, a non-integer count, a non-finite or out-of-range value, or more expected
    candidates than ``max_candidates``."""
    if allow == "none":
        raise ApiError(403, "this gateway serves its policy only: requests may not set \"hedge\"", param="hedge")
    name = hedge.get("mechanism", None if served is None else served.name)
    if not isinstance(name, str):
        raise ApiError(400, '"hedge" needs a "mechanism" name (no policy is served to default to)', param="hedge.mechanism")
    try:
        cls = lookup(name)
    except (KeyError, ValueError) as exc:
        raise ApiError(400, f'bad "hedge": {exc}', param="hedge.mechanism") from None
    options = {k: hedge[k] for k in option_names(cls) if k in hedge}
    if allow == "parameter":
        if served is None or name != served.name:
            raise ApiError(403, f"this gateway lets requests change only the parameter of its policy ({_served(served)})",
                           param="hedge.mechanism")
        changed = [k for k, v in options.items() if served.options.get(k) != v]
        if changed:
            raise ApiError(403, f"this gateway lets requests change only the parameter, not {changed}", param=f"hedge.{changed[0]}")
        options = dict(served.options)
    elif served is not None and name == served.name:
        options = {**served.options, **options}
    for key, value in options.items():
        if not isinstance(value, str | bool):
            _number(value, f"hedge.{key}", integer=key == "n")
    try:
        template = make(cls.name, **options)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f'bad "hedge": {exc}', param="hedge") from None
    parameter = template.parameter
    known = {"mechanism", "theta", parameter, *option_names(cls)}
    unknown = sorted(set(hedge) - known)
    if unknown:
        raise ApiError(400, f'bad "hedge": unknown key(s) {unknown}', param=f"hedge.{unknown[0]}")
    key = "theta" if "theta" in hedge else parameter
    if key not in hedge:
        if served is None or name != served.name:
            raise ApiError(400, f'bad "hedge": give the {parameter} (or theta)', param=f"hedge.{parameter}")
        theta = served.theta
    else:
        theta = _number(hedge[key], f"hedge.{key}", integer=template.integer_parameter)
    if not 0 <= theta <= MAX_THETA:
        raise ApiError(400, f"hedge.{key} = {theta:g} is outside [0, {MAX_THETA:g}]", param=f"hedge.{key}")
    try:
        mechanism = template.with_theta(theta)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f'bad "hedge": {exc}', param=f"hedge.{key}") from None
    try:
        check_servable(mechanism)
    except ValueError as exc:
        raise ApiError(400, f'bad "hedge": {exc}', param="hedge.mechanism") from None
    expected = mechanism.expected_samples()
    if not expected <= max_candidates:
        what = f"hedge.{'n' if 'n' in options and 'n' != parameter else key}"
        raise ApiError(400, f"{mechanism.display_name} draws {expected:g} candidates on average; this gateway draws at "
                       f"most {max_candidates} per request", param=what)
    return mechanism


def _served(served: Mechanism | None) -> str:
    return "none" if served is None else f"{served.name} at {served.parameter} = {served.theta:g}"


def _number(value: Any, param: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(param, "must be a number")
    if not math.isfinite(value):
        _fail(param, "must be finite")
    if integer and float(value) != math.floor(value):
        _fail(param, f"must be a whole number, got {value}")
    return float(value)


def _fail(param: str, message: str) -> float:
    raise ApiError(400, f"{param} {message}", param=param)
