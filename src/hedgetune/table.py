"""The calibration table: prompts with ragged pools of scored responses.

A :class:`RewardTable` holds, for every response, the prompt it answers, one or more proxy rewards
(reward models, judges, length, ...) and, on calibration data, a true reward (correctness, a gold
judge). It is validated once, when it is built; everything downstream assumes clean arrays.

Layout: responses are stored prompt by prompt (CSR style): the responses of prompt ``p`` are rows
``offsets[p]:offsets[p + 1]`` of every per-response column.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._threads import flat_copy
from .arrays import FloatArray, IntArray
from .errors import TableError as TableError

InvalidPolicy = Literal["raise", "drop"]

#: Largest reward magnitude a table accepts: sums of squares over millions of responses stay finite.
MAX_MAGNITUDE = 1e100


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (ids of any type: numbers, strings, bytes)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True, eq=False)
class RewardTable:
    """Prompts x ragged pools of responses with proxy rewards and (optionally) a true reward.

    Build it with :meth:`from_arrays`, :meth:`from_long`, :func:`hedgetune.read_table` or
    :func:`hedgetune.from_pandas`; the constructor itself expects already validated, prompt-grouped arrays.

    Attributes
    ----------
    prompt_ids : (P,) array of the prompt identifiers, in table order.
    offsets : (P + 1,) start of each prompt's responses in the per-response arrays.
    proxies : proxy name -> (N,) float array of proxy rewards.
    true_reward : (N,) float array, or ``None`` for a table without ground truth.
    groups : (P,) array of group labels (task, dataset), or ``None``.
    proxy : the name of the proxy used when none is named.
    provenance : column name -> how it was produced (model, version, command).
    dropped : how many responses were dropped as invalid when the table was built.
    pairwise_similarity : optional pairwise similarities between the responses of each prompt (e.g. the
        cosine of their embeddings, for RBoN-WD): each prompt's m x m block, row-major, responses
        in table order, the blocks concatenated (length ``sum(m**2)``); see :meth:`similarity_block`.
    """

    prompt_ids: NDArray[Any]
    offsets: IntArray
    proxies: Mapping[str, FloatArray]
    true_reward: FloatArray | None
    groups: NDArray[Any] | None = None
    proxy: str = ""
    provenance: Mapping[str, str] = field(default_factory=dict)
    dropped: int = 0
    pairwise_similarity: FloatArray | None = None

    def __post_init__(self) -> None:
        if not self.proxies:
            raise TableError("a reward table needs at least one proxy-reward column")
        if not self.proxy:
            object.__setattr__(self, "proxy", next(iter(self.proxies)))
        if self.proxy not in self.proxies:
            raise TableError(f"unknown proxy {self.proxy!r}; the table has {sorted(self.proxies)}")
        bad = [k for k, v in self.provenance.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise TableError(
                f"provenance must map column names to text (how each was produced); {bad[0]!r} maps to "
                f"{type(self.provenance[bad[0]]).__name__}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_long(
        cls,
        prompt_ids: ArrayLike,
        proxies: Mapping[str, ArrayLike] | ArrayLike,
        true_reward: ArrayLike | None = None,
        *,
        groups: ArrayLike | None = None,
        response_ids: ArrayLike | None = None,
        proxy: str | None = None,
        invalid: InvalidPolicy = "raise",
        provenance: Mapping[str, str] | None = None,
        pairwise_similarity: Sequence[ArrayLike] | None = None,
        _copy: bool = True,
    ) -> RewardTable:
        """Build from one row per response.

        ``prompt_ids`` says which prompt each response answers (prompts keep the order of their
        first appearance). ``proxies`` is one array or a mapping of named arrays. ``groups`` is
        per response and must be constant within a prompt. ``response_ids``, if given, must be
        unique within a prompt (duplicate rows are refused).

        ``invalid`` is the policy for NaN or infinite rewards: ``"raise"`` (default) refuses the
        table and says how many responses are affected; ``"drop"`` removes those responses, warns
        with the count and records it in :attr:`dropped`. Either way, a prompt left with fewer than
        two responses is refused, since a pool of one cannot rank anything.

        ``pairwise_similarity``, if given, holds one sequence per response: its similarity to every response
        of the same prompt, in the order those responses appear here (RBoN-WD needs it).

        The table never aliases the caller's arrays: it copies each column once. (Readers that
        hand over arrays of their own, which nothing else holds, pass ``_copy=False``.)
        """
        ids = _as_1d(prompt_ids, "prompt_ids")
        n = ids.size
        if n == 0:
            raise TableError("the table is empty: no responses")
        named = _named_proxies(proxies, n)
        true = None if true_reward is None else _numeric_column(true_reward, "true_reward", n)
        group_col = None if groups is None else _as_1d(groups, "groups")
        if group_col is not None and group_col.size != n:
            raise TableError(f"groups has {group_col.size} entries for {n} responses")
        if invalid not in ("raise", "drop"):
            raise ValueError(f"invalid must be 'raise' or 'drop', got {invalid!r}")

        labelled = [*named.items(), *([] if true is None else [("true_reward", true)])]
        bad, clean = _nonfinite_rows(labelled, n)
        dropped = 0 if bad is None else int(bad.sum())
        if dropped:
            _refuse_or_warn(labelled, dropped, invalid, pairwise_similarity is not None)
            assert bad is not None
            keep = ~bad
            ids = ids[keep]
            named = {k: v[keep] for k, v in named.items()}
            true = None if true is None else true[keep]
            group_col = None if group_col is None else group_col[keep]
            response_ids = None if response_ids is None else _as_1d(response_ids, "response_ids")[keep]
        if not clean:
            _check_magnitudes([*named.items(), *([] if true is None else [("true_reward", true)])])
        order, counts, prompt_order, prompt_index = _group_rows(ids)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)

        def reordered(values: NDArray[Any]) -> NDArray[Any]:
            """The column in table order; a copy (unless ``_copy`` is off), so the table never
            aliases the caller's arrays."""
            if order is not None:
                return values[order]
            return flat_copy(values) if _copy else values

        small = counts < 2
        if small.any():
            raise TableError(
                f"{int(small.sum())} prompts have fewer than two responses (e.g. prompt "
                f"{_plain(prompt_order[np.flatnonzero(small)[0]])!r}); a pool needs at least two to rank"
            )
        if response_ids is not None:
            _check_response_ids(_as_1d(response_ids, "response_ids"), prompt_index, counts)

        group_per_prompt = None
        if group_col is not None:
            sorted_groups = reordered(group_col)
            group_per_prompt = sorted_groups[offsets[:-1]]
            mixed = np.repeat(group_per_prompt, counts) != sorted_groups
            if mixed.any():
                raise TableError("groups must be constant within each prompt")

        return cls(
            prompt_ids=prompt_order,
            offsets=offsets,
            proxies={k: reordered(v) for k, v in named.items()},
            true_reward=None if true is None else reordered(true),
            groups=group_per_prompt,
            proxy=proxy or next(iter(named)),
            provenance=dict(provenance or {}),
            dropped=dropped,
            pairwise_similarity=None
            if pairwise_similarity is None
            else _similarity_blocks(pairwise_similarity, np.arange(ids.size) if order is None else order, counts),
        )

    @classmethod
    def from_arrays(
        cls,
        proxy: ArrayLike | Mapping[str, ArrayLike],
        true: ArrayLike | None = None,
        prompt_ids: ArrayLike | None = None,
        **kwargs: Any,
    ) -> RewardTable:
        """Build from NumPy arrays.

        With 2-D ``[prompts, samples]`` arrays (``NaN`` in every proxy *and* the true reward marks
        a missing response in a ragged pool; a NaN beside a number is invalid and follows
        ``invalid``), ``prompt_ids`` optionally names the prompts and ``groups`` gives one group per
        prompt. With 1-D arrays (one entry per
        response), ``prompt_ids`` is required and says which prompt each response answers.
        Other keyword arguments go to :meth:`from_long`.
        """
        if isinstance(proxy, Mapping) and not proxy:
            raise TableError("a reward table needs at least one proxy-reward column")
        first = next(iter(proxy.values())) if isinstance(proxy, Mapping) else proxy
        shape = np.shape(first)
        if len(shape) == 2:
            prompts, samples = shape
            ids = np.arange(prompts) if prompt_ids is None else _as_1d(prompt_ids, "prompt_ids")
            if ids.size != prompts:
                raise TableError(f"prompt_ids has {ids.size} entries for {prompts} prompts")
            if np.unique(ids).size != ids.size:
                raise TableError("duplicate prompt ids: each row of 2-D arrays is one prompt")
            named = _named_proxies(proxy, None)
            for name, values in named.items():
                if values.shape != shape:
                    raise TableError(f"proxy {name!r} has shape {values.shape}, expected {shape}")
            true_2d = None if true is None else _numeric_column(true, "true_reward", None)
            if true_2d is not None and true_2d.shape != shape:
                raise TableError(f"true_reward has shape {true_2d.shape}, expected {shape}")
            group_per_prompt = None
            if kwargs.get("groups") is not None:  # one group per prompt (row)
                group_per_prompt = _as_1d(kwargs["groups"], "groups")
                if group_per_prompt.size != prompts:
                    raise TableError(f"groups has {group_per_prompt.size} entries for {prompts} prompts (rows)")
            columns = [*named.values(), *([] if true_2d is None else [true_2d])]
            if (
                prompts >= 1
                and samples >= 2
                and set(kwargs) <= {"groups", "provenance", "invalid"}
                and kwargs.get("invalid", "raise") in ("raise", "drop")
                and all(_finite_and_bounded(values) for values in columns)
            ):  # nothing missing or invalid: the table is the matrices, row by row (one copy each)
                return cls(
                    prompt_ids=ids.copy(),
                    offsets=np.arange(prompts + 1, dtype=np.intp) * samples,
                    proxies={name: flat_copy(values) for name, values in named.items()},
                    true_reward=None if true_2d is None else flat_copy(true_2d),
                    groups=None if group_per_prompt is None else group_per_prompt.copy(),
                    provenance=dict(kwargs.get("provenance") or {}),
                )
            # A response is missing (a ragged pool's padding) when every proxy and the true
            # reward are NaN; any other NaN is invalid data, left to the ``invalid`` policy (a NaN
            # proxy beside a real true reward is not padding: dropping it silently loses data).
            missing = np.ones(shape, dtype=bool) if true_2d is None else np.isnan(true_2d)
            for values in named.values():
                missing &= np.isnan(values)
            keep = ~missing.ravel()
            full = bool(keep.all())  # no padding: pass flat views (from_long copies once)

            def flat(values: NDArray[Any]) -> NDArray[Any]:
                return values.ravel() if full else values.ravel()[keep]

            if group_per_prompt is not None:
                kwargs["groups"] = flat(np.repeat(group_per_prompt, samples))
            return cls.from_long(
                flat(np.repeat(ids, samples)),
                {k: flat(v) for k, v in named.items()},
                None if true_2d is None else flat(true_2d),
                **kwargs,
            )
        if len(shape) == 1:
            if prompt_ids is None:
                raise TableError("1-D arrays need prompt_ids: which prompt each response answers")
            return cls.from_long(prompt_ids, proxy, true, **kwargs)
        raise TableError(
            f"proxy must be 1-D (one per response) or 2-D (prompts x samples), got shape {shape}"
        )

    # ------------------------------------------------------------------ views
    @property
    def n_prompts(self) -> int:
        return int(self.prompt_ids.size)

    @property
    def n_responses(self) -> int:
        return int(self.offsets[-1])

    @property
    def pool_sizes(self) -> IntArray:
        """Number of responses per prompt."""
        return np.diff(self.offsets)

    @property
    def proxy_names(self) -> list[str]:
        return list(self.proxies)

    def proxy_values(self, name: str | None = None) -> FloatArray:
        """The per-response values of proxy ``name`` (default: :attr:`proxy`)."""
        key = name or self.proxy
        if key not in self.proxies:
            raise TableError(f"unknown proxy {key!r}; the table has {sorted(self.proxies)}")
        return self.proxies[key]

    def require_true_reward(self) -> FloatArray:
        if self.true_reward is None:
            raise TableError("this table has no true-reward column; curves and tuning need one")
        return self.true_reward

    def with_proxy(self, name: str) -> RewardTable:
        """The same table with ``name`` as its default proxy."""
        self.proxy_values(name)
        return _replace(self, proxy=name)

    def with_new_proxy(self, name: str, values: ArrayLike, provenance: str = "") -> RewardTable:
        """The table with one more proxy column (one value per response, in the table's order),
        made its default proxy."""
        if not isinstance(name, str) or not name:
            raise TableError(f"a proxy needs a non-empty name, got {name!r}")
        if name in self.proxies:
            raise TableError(f"the table already has a proxy named {name!r}")
        column = _numeric_column(values, name, self.n_responses)
        if not np.all(np.isfinite(column)):
            raise TableError(f"proxy {name!r} has NaN or infinite values")
        return _replace(
            self,
            proxies={**self.proxies, name: column},
            proxy=name,
            provenance={**self.provenance, name: provenance},
        )

    def by_group(self) -> dict[str, RewardTable]:
        """The table split by its group column (task, dataset), groups in sorted label order."""
        if self.groups is None:
            raise TableError("the table has no group column; read it with group_col=...")
        labels = self.groups.astype(str)
        return {str(label): self.subset(np.flatnonzero(labels == label)) for label in np.unique(labels)}

    def subset(self, prompts: ArrayLike) -> RewardTable:
        """The table restricted to the prompts at the given positions (in that order)."""
        index = np.asarray(prompts, dtype=np.intp)
        sizes = self.pool_sizes[index]
        rows = concatenated_ranges(self.offsets[index], sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        similarity = None
        if self.pairwise_similarity is not None:
            block_starts = np.concatenate([[0], np.cumsum(self.pool_sizes**2)])[:-1]
            similarity = self.pairwise_similarity[concatenated_ranges(block_starts[index], sizes**2)]
        return RewardTable(
            prompt_ids=self.prompt_ids[index],
            offsets=offsets,
            proxies={k: v[rows] for k, v in self.proxies.items()},
            true_reward=None if self.true_reward is None else self.true_reward[rows],
            groups=None if self.groups is None else self.groups[index],
            proxy=self.proxy,
            provenance=self.provenance,
            dropped=self.dropped,
            pairwise_similarity=similarity,
        )

    def similarity_block(self, prompt: int) -> FloatArray:
        """The ``m x m`` similarities between the responses of the prompt at position ``prompt``."""
        if self.pairwise_similarity is None:
            raise TableError("the table has no pairwise_similarity column")
        m = int(self.pool_sizes[prompt])
        start = int((self.pool_sizes[:prompt] ** 2).sum())
        return self.pairwise_similarity[start : start + m * m].reshape(m, m)

    def prompt_of_response(self) -> NDArray[Any]:
        """The prompt id of every response, in storage order."""
        return np.repeat(self.prompt_ids, self.pool_sizes)

    def summary(self) -> dict[str, Any]:
        """Counts and ranges for ``hedgetune info``."""
        sizes = self.pool_sizes
        out: dict[str, Any] = {
            "prompts": self.n_prompts,
            "responses": self.n_responses,
            "pool_size": {
                "min": int(sizes.min()),
                "median": float(np.median(sizes)),
                "max": int(sizes.max()),
            },
            "proxies": {
                name: {
                    "mean": float(v.mean()),
                    "std": float(v.std()),
                    "provenance": self.provenance.get(name, ""),
                }
                for name, v in self.proxies.items()
            },
            "default_proxy": self.proxy,
            "dropped": self.dropped,
        }
        if self.true_reward is not None:
            out["true_reward"] = {
                "mean": float(self.true_reward.mean()),
                "std": float(self.true_reward.std()),
            }
        if self.groups is not None:
            labels, counts = np.unique(self.groups.astype(str), return_counts=True)
            out["groups"] = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        return out

    def __repr__(self) -> str:
        return (
            f"RewardTable({self.n_prompts} prompts, {self.n_responses} responses, "
            f"proxies={self.proxy_names}, true_reward={'yes' if self.true_reward is not None else 'no'})"
        )


def _similarity_blocks(lists: Any, order: IntArray, counts: IntArray) -> FloatArray:
    """One similarity list per response (input order) -> each prompt's m x m block, flattened.

    ``lists`` is a sequence of 1-D arrays, or a ``pyarrow`` list array (read without a Python loop).
    """
    if len(lists) != order.size:
        raise TableError(f"pairwise_similarity has {len(lists)} entries for {order.size} responses")
    if hasattr(lists, "offsets") and hasattr(lists, "flatten"):  # pyarrow ListArray
        if lists.null_count:
            raise TableError(f"pairwise_similarity has {lists.null_count} missing lists")
        bounds = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.intp)
        values = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=float)
        starts, sizes = bounds[:-1] - bounds[0], np.diff(bounds)
        lengths = sizes[order]
        ok = np.array_equal(lengths, np.repeat(counts, counts))
        flat = values[concatenated_ranges(starts[order], lengths)] if ok else values
        return _checked_similarity(flat, lengths, counts)
    try:
        rows = [np.asarray(lists[int(i)], dtype=float) for i in order]
    except (TypeError, ValueError):
        raise TableError("pairwise_similarity must hold one list of numbers per response") from None
    lengths = np.array([r.size if r.ndim == 1 else -1 for r in rows])
    return _checked_similarity(np.concatenate(rows) if rows else np.zeros(0), lengths, counts)


def _checked_similarity(flat: FloatArray, lengths: IntArray, counts: IntArray) -> FloatArray:
    expected = np.repeat(counts, counts)
    wrong = np.flatnonzero(lengths != expected)
    if wrong.size:
        raise TableError(
            f"{wrong.size} responses have a pairwise_similarity list whose length is not their prompt's pool size "
            f"(e.g. {lengths[wrong[0]]} entries for a pool of {expected[wrong[0]]})"
        )
    if not np.all(np.isfinite(flat)):
        raise TableError(f"pairwise_similarity has {int((~np.isfinite(flat)).sum())} NaN or infinite values")
    if flat.size and float(np.abs(flat).max()) > MAX_MAGNITUDE:
        raise TableError(f"pairwise_similarity has values beyond +-{MAX_MAGNITUDE:g}: rescale it")
    return flat


def concatenated_ranges(starts: IntArray, lengths: IntArray) -> IntArray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without a loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.intp)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return (np.arange(total) + shift).astype(np.intp)


def _replace(table: RewardTable, **changes: Any) -> RewardTable:
    from dataclasses import replace

    return replace(table, **changes)


def _as_1d(values: ArrayLike, name: str) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise TableError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == object:  # mixed Python objects: refuse what would merge or crash later
        kinds = {type(v) for v in arr.tolist()}
        if type(None) in kinds or any(isinstance(v, float) and np.isnan(v) for v in arr.tolist()):
            raise TableError(f"{name} has missing values (None or NaN)")
        if len(kinds) > 1:
            names = sorted(k.__name__ for k in kinds)
            raise TableError(f"{name} mixes types ({', '.join(names)}): 1 and '1' would be different prompts")
    return arr


def _numeric_column(values: ArrayLike, name: str, n: int | None) -> FloatArray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        arr = arr.astype(float)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TableError(f"column {name!r} holds complex numbers; rewards must be real")
    if np.issubdtype(arr.dtype, np.datetime64) or np.issubdtype(arr.dtype, np.timedelta64):
        raise TableError(f"column {name!r} must be numeric, got {arr.dtype} values")
    if not (np.issubdtype(arr.dtype, np.number)):
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise TableError(
                f"column {name!r} must be numeric, got values like {arr.ravel()[:3].tolist()}"
            ) from None
    arr = arr.astype(float, copy=False)  # the table copies each column once, when it is built
    if n is not None and (arr.ndim != 1 or arr.size != n):
        raise TableError(f"column {name!r} has shape {arr.shape}, expected ({n},)")
    return arr


def _finite_and_bounded(values: FloatArray) -> bool:
    """Whether every value is finite and within +-MAX_MAGNITUDE, as far as one pass can tell: the
    sum of squares (one BLAS call) is at most MAX_MAGNITUDE^2 only if every value is. False means
    "look closer", not "invalid" (a NaN, an infinity, or just many large values)."""
    flat = values.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.dot(flat, flat) <= MAX_MAGNITUDE**2)


def _finite(values: FloatArray) -> bool:
    """Whether every value is finite, in one pass when it is (a finite sum)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(values.sum())) or bool(np.isfinite(values).all())


def _named_proxies(proxies: Mapping[str, ArrayLike] | ArrayLike, n: int | None) -> dict[str, FloatArray]:
    if isinstance(proxies, Mapping):
        if not proxies:
            raise TableError("a reward table needs at least one proxy-reward column")
        return {str(k): _numeric_column(v, str(k), n) for k, v in proxies.items()}
    return {"proxy_reward": _numeric_column(proxies, "proxy_reward", n)}


def as_str_list(values: Sequence[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


# ------------------------------------------------------------------ from_long's steps
def _nonfinite_rows(labelled: list[tuple[str, FloatArray]], n: int) -> tuple[NDArray[np.bool_] | None, bool]:
    """Rows with a NaN or infinite reward in any column (None when there are none) and whether
    every column is also within :data:`MAX_MAGNITUDE` (one pass per column when all is well)."""
    clean = all(_finite_and_bounded(values) for _, values in labelled)
    if clean or all(_finite(values) for _, values in labelled):
        return None, clean
    bad = np.zeros(n, dtype=bool)
    for _, values in labelled:
        bad |= ~np.isfinite(values)
    return bad, False


def _refuse_or_warn(labelled: list[tuple[str, FloatArray]], dropped: int, invalid: str, has_similarity: bool) -> None:
    """``invalid='raise'``: refuse the table, naming the columns; ``'drop'``: warn with the count."""
    if has_similarity and invalid == "drop":
        raise TableError(
            f"{dropped} responses have NaN or infinite rewards; with a pairwise_similarity column they cannot "
            "be dropped (the other responses' similarity lists refer to them): clean the table first"
        )
    where = ", ".join(f"{name}: {int((~np.isfinite(v)).sum())}" for name, v in labelled if (~np.isfinite(v)).any())
    if invalid == "raise":
        raise TableError(
            f"{dropped} responses have NaN or infinite rewards ({where}); clean them, or "
            "pass invalid='drop' to drop those responses"
        )
    warnings.warn(f"dropped {dropped} responses with NaN or infinite rewards ({where})", stacklevel=3)


def _check_magnitudes(labelled: list[tuple[str, FloatArray]]) -> None:
    for name, values in labelled:
        largest = max(float(values.max()), -float(values.min())) if values.size else 0.0
        if largest > MAX_MAGNITUDE:
            raise TableError(
                f"{name} has values as large as {largest:.3g}; rewards must lie within "
                f"+-{MAX_MAGNITUDE:g} so that sums and variances over a table stay finite: rescale it"
            )


def _group_rows(ids: NDArray[Any]) -> tuple[IntArray | None, IntArray, NDArray[Any], IntArray | None]:
    """Rows grouped by prompt, prompts in order of first appearance, stable within a prompt:
    ``(order, counts, prompt ids, each row's prompt)``; ``order`` (and each row's prompt, built
    only where needed) is None when the rows are already grouped (each prompt's rows together, as
    files and 2-D arrays come: one comparison pass instead of sorting every row's id)."""
    starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])
    if np.unique(ids[starts]).size == starts.size:
        return None, np.diff(np.r_[starts, ids.size]), ids[starts], None
    uniques, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank_of_unique = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    prompt_index = rank_of_unique[inverse]
    order = np.argsort(prompt_index, kind="stable")
    return order, np.bincount(prompt_index, minlength=uniques.size), uniques[np.argsort(rank_of_unique)], prompt_index


def _check_response_ids(rid: NDArray[Any], prompt_index: IntArray | None, counts: IntArray) -> None:
    if rid.size != int(counts.sum()):
        raise TableError(f"response_ids has {rid.size} entries for {int(counts.sum())} responses")
    if prompt_index is None:
        prompt_index = np.repeat(np.arange(counts.size), counts)
    pairs = np.rec.fromarrays([prompt_index, rid.astype(str)])
    _, pair_counts = np.unique(pairs, return_counts=True)
    if (pair_counts > 1).any():
        raise TableError(f"{int((pair_counts > 1).sum())} duplicate (prompt, response) rows")
