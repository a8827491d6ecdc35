"""Generate candidate responses: prompt sources and resumable sharded output (the backends that
sample them live in :mod:`hedgetune.pipeline.backends`).

Each prompt's samples are drawn with a seed derived from ``(seed, prompt_id)`` alone, and finished
prompts are written in Parquet shards atomically; so a run that is killed and restarted skips what
is done and ends with exactly the table an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_path, atomic_write_bytes, exclusive, remove_stale_temporaries
from ..protocol import redact
from .backends import DEFAULT_MODEL as DEFAULT_MODEL
from .backends import Backend as Backend
from .backends import Prompt as Prompt
from .backends import Sample as Sample
from .backends import TransformersBackend as TransformersBackend
from .backends import folder_digest as folder_digest
from .backends import packaged_smollm2 as packaged_smollm2


# ------------------------------------------------------------------------------------ prompts
def reasoning_gym_prompts(name: str, size: int, seed: int = 0, **config: Any) -> list[Prompt]:
    """Seeded problems from ``reasoning-gym`` (``name`` as in ``reasoning_gym.create_dataset``)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    source = f"reasoning-gym {name} size={size} seed={seed} {json.dumps(config, sort_keys=True)}"
    return [
        Prompt(f"{name}-{seed}-{i}", str(e["question"]), str(e["answer"]), source)
        for i, e in enumerate(dataset)
    ]


def jsonl_prompts(
    path: str | os.PathLike[str],
    text_field: str = "question",
    answer_field: str | None = "answer",
    id_field: str | None = None,
) -> list[Prompt]:
    """Prompts from a JSONL file (GSM8K style: ``question`` and ``answer`` fields)."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            row = json.loads(line)
            if text_field not in row:
                raise ValueError(f"line {number + 1} of {path} has no field {text_field!r}")
            answer = None if answer_field is None or answer_field not in row else str(row[answer_field])
            prompt_id = str(row[id_field]) if id_field else f"{Path(path).stem}-{number}"
            prompts.append(Prompt(prompt_id, str(row[text_field]), answer, str(path)))
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate prompt ids in {path}")
    return prompts


def prompt_seed(seed: int, prompt_id: str) -> int:
    """A 63-bit seed that depends only on the run's seed and the prompt."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ------------------------------------------------------------------------------------ shards
GENERATION_COLUMNS = (
    "prompt_index",
    "prompt_id",
    "sample_idx",
    "prompt",
    "answer",
    "response",
    "token_logprobs",
    "n_tokens",
)


class ShardWriter:
    """Finished prompts go to Parquet shards, each written atomically.

    A shard is named by its first prompt's index and a hash of the prompt ids it holds
    (``shard-00000012-1a2b3c4d.parquet``), so a shard written after another was deleted can never
    take its name. Each shard's SHA-256 is recorded in ``checksums.json`` once it is written. On
    resume, a shard that cannot be read (a crash or a full disk cut it short) or whose bytes no
    longer match their checksum (changed after it was written) is moved to ``quarantine/`` with a
    warning, and its prompts are generated again; a shard without a checksum (a crash between the
    two writes) is read whole and recorded. ``run.json`` records the settings; resuming with
    different settings is refused, so a table never mixes two configurations.
    """

    def __init__(
        self, out_dir: str | os.PathLike[str], settings: dict[str, Any], prompts_per_shard: int = 8
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        self.prompts_per_shard = prompts_per_shard
        manifest = self.out_dir / "run.json"
        if manifest.exists():
            previous = json.loads(manifest.read_text())
            for key in _ADDED_LATER:  # a run written before these were recorded may resume
                if key not in previous and key in settings:
                    previous[key] = settings[key]
            if previous != settings:
                changed = sorted(
                    k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k)
                )
                raise ValueError(
                    f"{self.out_dir} holds a run with other settings ({', '.join(changed)}); use a new folder"
                )
        else:
            atomic_write_bytes(manifest, json.dumps(settings, indent=1, sort_keys=True).encode())
        self._buffer: list[dict[str, Any]] = []
        self._buffered_prompts = 0
        self.checksums = read_checksums(self.out_dir)

    def shards(self) -> list[Path]:
        return _shards(self.out_dir)

    def done(self) -> set[str]:
        """Prompt ids already written; shards that are unreadable or changed since written are
        quarantined (their prompts are not done), unlisted ones read whole and recorded."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids: set[str] = set()
        known = dict(self.checksums)
        for shard in self.shards():
            expected, actual = known.get(shard.name), file_digest(shard)
            if expected is not None and expected != actual:
                self._quarantine(shard, "its bytes do not match the checksum recorded when it was written")
                continue
            try:
                table = pq.read_table(shard, columns=None if expected is None else ["prompt_id"])
            except (OSError, ValueError, pa.ArrowException) as exc:  # the shard is unusable
                self._quarantine(shard, f"it could not be read ({type(exc).__name__})")
                continue
            ids.update(table.column("prompt_id").to_pylist())
            self.checksums[shard.name] = actual
        if self.checksums != known:
            self._save_checksums()
        return ids

    def _quarantine(self, shard: Path, why: str) -> None:
        quarantine = self.out_dir / "quarantine"
        quarantine.mkdir(exist_ok=True)
        os.replace(shard, quarantine / shard.name)
        self.checksums.pop(shard.name, None)
        self._save_checksums()
        warnings.warn(
            f"{shard.name}: {why}; moved to quarantine/ and its prompts will be generated again",
            UserWarning,
            stacklevel=3,
        )

    def _save_checksums(self) -> None:
        atomic_write_bytes(self.out_dir / CHECKSUMS, json.dumps(self.checksums, indent=1, sort_keys=True).encode())

    def add_prompt(self, rows: list[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        self._buffered_prompts += 1
        if self._buffered_prompts >= self.prompts_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = sorted({str(row["prompt_id"]) for row in self._buffer})
        digest = hashlib.sha256("\x00".join(ids).encode()).hexdigest()[:8]
        first = min(int(row["prompt_index"]) for row in self._buffer)
        path = self.out_dir / f"shard-{first:08d}-{digest}.parquet"
        table = pa.Table.from_pylist(self._buffer)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
            digest_of_shard = file_digest(tmp)
        self.checksums[path.name] = digest_of_shard
        self._save_checksums()
        self._buffer, self._buffered_prompts = [], 0


#: The run folder's record of each shard's SHA-256.
CHECKSUMS = "checksums.json"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(out_dir: Path) -> dict[str, str]:
    """The run's recorded shard checksums (none for a run written before they were recorded)."""
    path = Path(out_dir) / CHECKSUMS
    if not path.exists():
        return {}
    try:
        sums = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ValueError(f"{str(path)!r} is not readable JSON: restore it, or delete it to check every shard again") from None
    if not isinstance(sums, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items()):
        raise ValueError(f"{str(path)!r} must map shard names to checksums")
    return sums


def _shards(out_dir: Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).glob("shard-*.parquet") if p.is_file())


def _verify_checksums(out_dir: Path, shards: Sequence[Path]) -> None:
    """Every shard matches its recorded checksum (a run that records them: from this version on)."""
    sums = read_checksums(out_dir)
    if not sums and not (out_dir / CHECKSUMS).exists():
        return  # written before checksums were recorded
    remedy = ": rerun generate with the same command to check it (a changed shard is quarantined and generated again)"
    for shard in shards:
        expected = sums.get(shard.name)
        if expected is None:
            raise ValueError(f"shard {shard.name} of {str(out_dir)!r} has no checksum{remedy}")
        if file_digest(shard) != expected:
            raise ValueError(f"shard {shard.name} of {str(out_dir)!r} does not match its checksum{remedy}")


def read_generations(out_dir: str | os.PathLike[str], *, partial: bool = False) -> Any:
    """All finished samples of a run as one ``pyarrow.Table``, in prompt and sample order.

    Refuses a run with an unreadable shard (rerunning ``generate`` quarantines and regenerates it),
    with a prompt in more than one shard, or, unless ``partial``, with prompts still to generate.
    """
    from ..io import read_shards

    shards = _shards(Path(out_dir))
    if not shards:
        raise FileNotFoundError(f"no generation shards in {str(out_dir)!r}")
    table = read_shards(
        shards,
        "shard",
        ": rerun generate with the same command to quarantine it and generate its prompts again",
    )
    ids = table.column("prompt_id").to_pylist()
    samples = table.column("sample_idx").to_pylist()
    if len(set(zip(ids, samples, strict=True))) != len(ids):
        raise ValueError(f"a prompt appears in more than one shard of {str(out_dir)!r}; remove the copies")
    _verify_checksums(Path(out_dir), shards)
    manifest = Path(out_dir) / "run.json"
    expected = json.loads(manifest.read_text()).get("prompt_count") if manifest.exists() else None
    finished = len(set(ids))
    if not partial and isinstance(expected, int) and finished < expected:
        raise ValueError(
            f"the run in {str(out_dir)!r} has {finished} of {expected} prompts finished: rerun generate "
            "with the same command to finish it, or pass --partial (partial=True) to use what is there"
        )
    return table.sort_by([("prompt_index", "ascending"), ("sample_idx", "ascending")])


# ------------------------------------------------------------------------------------ the run
@dataclass
class GenerationStats:
    prompts: int = 0
    skipped: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def prompts_per_second(self) -> float:
        return self.prompts / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def generate(
    prompts: Sequence[Prompt],
    backend: Backend,
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    prompts_per_shard: int = 8,
    progress: Callable[[GenerationStats], None] | None = None,
) -> GenerationStats:
    """Generate ``n`` samples for every prompt not yet in ``out_dir``; resumable.

    ``progress`` is called with the statistics after every prompt when the backend generates one
    prompt at a time (local models), else after every shard of prompts generated concurrently."""
    with exclusive(Path(out_dir) / "run.json"):  # one run writes a folder at a time
        writer, chunks, stats = prepare_run(prompts, backend, out_dir, n=n, seed=seed, prompts_per_shard=prompts_per_shard)
        start = time.perf_counter()
        one_at_a_time = progress is not None and not hasattr(backend, "max_concurrency")
        for chunk, seeds in chunks:
            if one_at_a_time:  # the same calls the batch would make, one prompt each, so progress is live
                results: list[list[Sample]] = []
                live = GenerationStats(prompts=stats.prompts, skipped=stats.skipped, tokens=stats.tokens)
                for (_, prompt), prompt_seed_ in zip(chunk, seeds, strict=True):
                    results += backend.generate_many([prompt], n, [prompt_seed_])
                    live.prompts += 1
                    live.tokens += sum(len(s.token_logprobs) for s in results[-1])
                    live.seconds = time.perf_counter() - start
                    progress(live)  # type: ignore[misc]
            else:
                results = backend.generate_many([p for _, p in chunk], n, seeds)
            write_chunk(writer, chunk, results, stats)
            stats.seconds = time.perf_counter() - start
            if progress:
                progress(stats)
        writer.flush()
        stats.seconds = time.perf_counter() - start
        return stats


#: A batch of prompts still to generate (with their positions in the run) and their seeds.
Chunk = tuple[list[tuple[int, Prompt]], list[int]]


def prepare_run(
    prompts: Sequence[Prompt],
    backend: Backend,
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    prompts_per_shard: int = 8,
) -> tuple[ShardWriter, list[Chunk], GenerationStats]:
    """The run's shard writer (its settings checked against a run already there), the prompts
    still to generate in shard-sized chunks with their per-prompt seeds, and the statistics so far.
    Shared by the single-process runner and the Ray runner, so both write the same shards."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise ValueError("prompt ids must be unique")
    settings = {
        "backend": backend.name,
        "model": str(backend.model),
        "n": n,
        "seed": seed,
        "backend_settings": _settings_of(backend),
        "prompts": _fingerprint(prompts),
        "prompt_count": len(prompts),
    }
    digest = getattr(backend, "model_digest", None)
    value = digest() if callable(digest) else None
    if value:  # the weights themselves, so a changed model folder cannot resume a run
        settings["model_digest"] = value
    writer = ShardWriter(out_dir, settings, prompts_per_shard)
    done = writer.done()
    stats = GenerationStats(skipped=len(done & set(ids)))
    pending = [(index, p) for index, p in enumerate(prompts) if p.prompt_id not in done]
    chunks = []
    for first in range(0, len(pending), prompts_per_shard):
        chunk = pending[first : first + prompts_per_shard]
        chunks.append((chunk, [prompt_seed(seed, p.prompt_id) for _, p in chunk]))
    return writer, chunks, stats


def write_chunk(
    writer: ShardWriter, chunk: list[tuple[int, Prompt]], results: Sequence[Sequence[Sample]], stats: GenerationStats
) -> None:
    """One chunk's samples as one shard (written atomically), and the statistics updated."""
    for (index, prompt), samples in zip(chunk, results, strict=True):
        writer.add_prompt(
            [
                {
                    "prompt_index": index,
                    "prompt_id": prompt.prompt_id,
                    "sample_idx": k,
                    "prompt": prompt.text,
                    "answer": prompt.answer,
                    "response": s.text,
                    "token_logprobs": s.token_logprobs,
                    "n_tokens": len(s.token_logprobs),
                }
                for k, s in enumerate(samples)
            ]
        )
        stats.prompts += 1
        stats.tokens += sum(len(s.token_logprobs) for s in samples)
    writer.flush()


#: Entries of ``run.json`` that earlier versions did not write.
_ADDED_LATER = ("prompt_count", "model_digest")


#: Backend fields that do not change what is generated (and secrets): left out of ``run.json``.
_NOT_SETTINGS = frozenset({"api_key", "timeout", "retries", "backoff", "max_concurrency", "requests_made"})


def _settings_of(backend: Backend) -> dict[str, Any]:
    try:
        values = asdict(backend)  # type: ignore[call-overload]
    except TypeError:
        return {}
    secret = values.get("api_key")
    return {  # credentials in a URL (user:password@, ?api_key=) never reach the manifest
        k: redact(v, [secret]) if isinstance(v, str) else v
        for k, v in values.items()
        if not k.startswith("_") and k not in _NOT_SETTINGS and isinstance(v, str | int | float | bool)
    }


def _fingerprint(prompts: Iterable[Prompt]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(f"{p.prompt_id}\x00{p.text}\x00{p.answer}\x01".encode())
    return digest.hexdigest()[:16]
