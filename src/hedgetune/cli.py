"""The ``hedgetune`` command line: a thin layer over the library."""

from __future__ import annotations

import click

from . import __version__
from .mechanisms import BestOfN, BestOfPoisson, Mechanism, SoftBestOfN, Tilted


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hedgetune")
def main() -> None:
    """Pick among sampled LLM responses with a reward model, without falling for reward hacking."""


@main.command()
def demo() -> None:
    """Print the mechanisms' reference table (KL, expected proxy quantile, samples drawn)."""
    rows: list[Mechanism] = []
    for theta in (1, 4, 8, 16, 32):
        rows += [BestOfN(theta + 1), BestOfPoisson(theta), Tilted(2.0 * theta)]
    rows += [SoftBestOfN(4, 2.0, on="quantile"), SoftBestOfN(8, 10.0, on="quantile")]
    click.echo(f"{'mechanism':<44}{'KL (nats)':>10}{'E[U]':>9}{'samples':>9}")
    for mech in rows:
        click.echo(f"{mech!r:<44}{mech.kl():>10.4f}{mech.mean():>9.4f}{mech.expected_samples():>9.1f}")


if __name__ == "__main__":
    main()
