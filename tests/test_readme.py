"""The README is a contract: every ``hedgetune ...`` command in its code blocks must parse.

Each command line is taken from the README's fenced code blocks (continuation lines joined,
comments and pipes removed, ``...`` placeholders dropped), and its subcommand and flags are parsed
by the real command-line parser, as ``--help`` would see them: no table is read, no model runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from hedgetune.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[str]:
    """Every ``hedgetune`` command line in the shell code blocks of ``text``."""
    blocks, current, language = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language = line[3:].strip() or "sh"
            else:
                if language in ("bash", "sh", "console", "shell"):
                    blocks.append("\n".join(current))
                current, language = [], None
        elif language is not None:
            current.append(line)
    commands = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words: list[str] = []
            for word in [*lexer, ";"]:
                if set(word) <= set("|&;"):  # a pipe or a command separator ends a command
                    if words and words[0] == "hedgetune":
                        commands.append(shlex.join(words))
                    words = []
                else:
                    words.append(word)
    return commands


def parse(command: str) -> None:
    """Parse a command line as ``hedgetune`` would, stopping before anything runs."""
    words = [w for w in shlex.split(command)[1:] if w != "..."]
    assert words, f"no subcommand in {command!r}"
    with click.Context(main, info_name="hedgetune") as ctx:
        sub = main.get_command(ctx, words[0])
        assert sub is not None, f"{command!r}: no subcommand {words[0]!r}"
        sub_ctx = click.Context(sub, info_name=words[0], parent=ctx)
        parser = sub.make_parser(sub_ctx)
        # Raises click.NoSuchOption / BadOptionUsage for an unknown flag or a missing value.
        opts, _args, _ = parser.parse_args(words[1:])
        for param in sub.get_params(sub_ctx):
            choices = getattr(param.type, "choices", None)
            value = opts.get(param.name)  # type: ignore[call-overload]
            if choices is not None and value is not None:
                values = value if isinstance(value, list | tuple) else [value]
                bad = [v for v in values if v not in choices]
                assert not bad, f"{command!r}: {bad} is not a choice of {param.name}"


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_documents_commands() -> None:
    assert len(COMMANDS) >= 10
    assert any(c.startswith("hedgetune generate") and "--backend" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command: str) -> None:
    parse(command)


def test_the_checker_catches_an_unknown_flag_and_subcommand() -> None:
    with pytest.raises(click.NoSuchOption):
        parse("hedgetune generate --no-such-flag 1")
    with pytest.raises(AssertionError, match="no subcommand"):
        parse("hedgetune no-such-command")
    with pytest.raises(AssertionError, match="not a choice"):
        parse("hedgetune generate --backend carrier-pigeon")


# ------------------------------------------------------------------------------------ executed
def _command_line_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The command line")
    return readme_commands(text[start : text.index("## Making calibration tables", start)])


@pytest.mark.parametrize("command", _command_line_block())
def test_every_command_line_example_runs_on_a_bundled_table(command: str, tmp_path: Path) -> None:
    """Review: two README examples failed when run. Each runs here as written, TABLE being the
    bundled AlpacaEval table (and folders under a temporary directory)."""
    from click.testing import CliRunner

    import hedgetune as ht
    from hedgetune.data import load

    path = tmp_path / "alpacaeval.parquet"
    ht.write_table(load("alpacaeval"), path)
    words = [str(path) if w == "TABLE" else str(tmp_path / w) if w.endswith("/") else w for w in shlex.split(command)[1:]]
    stdin = "0.1 0.9 0.4\n" if words[0] == "select" else None
    out = CliRunner().invoke(main, words, input=stdin)
    assert out.exit_code == 0, f"{command}\n{out.output}"
    assert out.stdout.strip()


def test_the_library_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The library")
    block = text[text.index("```python\n", start) + len("```python\n") :]
    block = block[: block.index("```")]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    chosen = namespace["chosen"]
    counts = namespace["counts"]
    import numpy as np

    assert np.all(np.asarray(chosen) < np.asarray(counts))  # never a candidate that was not drawn


def test_every_spec_section_cited_in_the_code_exists() -> None:
    """Docstrings cite docs/SPEC.md by section: each cited section is there."""
    root = Path(__file__).parent.parent
    headings = {m.group(1) for m in re.finditer(r"^## (\d+)\.", (root / "docs" / "SPEC.md").read_text(), re.M)}
    cited = set()
    for path in (root / "src" / "hedgetune").rglob("*.py"):
        for match in re.finditer(r"SPEC\.md §(\d+)(?:-(\d+))?", path.read_text()):
            cited.update(str(k) for k in range(int(match.group(1)), int(match.group(2) or match.group(1)) + 1))
        assert "SPEC §" not in path.read_text(), f"{path} cites a SPEC outside the repository"
    assert cited and cited <= headings, (cited, headings)


def test_the_mechanism_table_lists_every_registered_mechanism() -> None:
    """The README's table of mechanisms and the registry name the same mechanisms, and each row's
    object is the registered class."""
    import hedgetune
    from hedgetune.mechanisms import registry

    text = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(hedgetune[\w.]*)\.(\w+)\(", text, re.M)
    assert sorted(name for name, _, _ in rows) == sorted(registry.names())
    for name, module, cls in rows:
        owner = hedgetune if module == "hedgetune" else __import__(module, fromlist=["_"])
        assert getattr(owner, cls) is registry.lookup(name), (name, module, cls)
