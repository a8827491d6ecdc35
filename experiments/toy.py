"""The paper's toy (SPEC §5): true reward against KL for every mechanism, with HedgeTune's optima.

True reward ``R(u) = u^12 (1 - u) / C`` of the proxy quantile (peak 1 at u = 12/13). Curves are
analytic: ``f(theta) = int R q_theta`` by Gauss-Legendre quadrature on graded panels, and
HedgeTune's optimum is the root of ``f'(theta) = int R q_theta psi_theta`` (Brent). Also drawn: the
proxy tilt (``q proportional to e^(beta u)``) and the true-reward tilt (``q proportional to
e^(beta R(u))``, the best any policy can do at a given KL).

Run: ``.venv/bin/python experiments/toy.py [--out experiments/out] [--quick]`` (about 20 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import optimize

import hedgetune as ht
from hedgetune.mechanisms._numerics import composite_gauss_legendre
from hedgetune.synthetic import toy_reward

BREAKS = np.unique(np.concatenate([np.linspace(0, 1, 65), 1 - np.geomspace(1e-6, 0.1, 30)]))
U, W = composite_gauss_legendre(BREAKS, 16)
R = toy_reward(U)


def true_reward(mech: ht.Mechanism) -> float:
    return float(W @ (R * mech.pdf(U)))


def residual(mech: ht.Mechanism) -> float:
    """HedgeTune's residual ``E_theta[R psi]`` by quadrature."""
    return float(W @ (R * mech.pdf(U) * mech.score(U)))


def optimum(template: ht.Mechanism, lo: float, hi: float) -> float:
    return float(optimize.brentq(lambda th: residual(template.with_theta(th)), lo, hi, xtol=1e-12))


def true_tilt(beta: float) -> tuple[float, float]:
    """KL and true reward of ``q proportional to exp(beta R(u))``."""
    logq = beta * R
    logq -= np.log(W @ np.exp(logq))
    q = np.exp(logq)
    return float(W @ (q * logq)), float(W @ (q * R))


def run(out: Path, quick: bool = False) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    ns = np.unique(np.round(np.geomspace(1, 256, 24 if quick else 60)))
    mus = np.concatenate([[0], np.geomspace(0.05, 256, 24 if quick else 60)])
    betas = np.concatenate([[0], np.geomspace(0.05, 300, 24 if quick else 60)])
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "Best-of-n": (
            np.array([ht.BestOfN(n).kl() for n in ns]),
            np.array([true_reward(ht.BestOfN(n)) for n in ns]),
        ),
        "Best-of-Poisson": (
            np.array([ht.BestOfPoisson(m).kl() for m in mus]),
            np.array([true_reward(ht.BestOfPoisson(m)) for m in mus]),
        ),
        "proxy tilt": (
            np.array([ht.Tilted(b).kl() for b in betas]),
            np.array([true_reward(ht.Tilted(b)) for b in betas]),
        ),
    }
    sbon_ns = (2, 8, 32) if quick else (2, 4, 8, 16, 32, 64, 128)
    sbon_betas = np.concatenate([[0], np.geomspace(0.1, 200, 12 if quick else 20)])
    sbon_optima = {}
    for n in sbon_ns:
        mechs = [ht.SoftBestOfN(n, b, on="quantile") for b in sbon_betas]
        curves[f"Soft Best-of-n (n={n})"] = (
            np.array([m.kl() for m in mechs]),
            np.array([true_reward(m) for m in mechs]),
        )
        template = ht.SoftBestOfN(n, 1.0, on="quantile")
        if residual(template.with_theta(200.0)) < 0 < residual(template.with_theta(0.5)):
            beta = optimum(template, 0.5, 200.0)
            sbon_optima[n] = {
                "beta": beta,
                "true_reward": true_reward(template.with_theta(beta)),
                "kl": template.with_theta(beta).kl(),
            }
    tilt_betas = np.concatenate([[0], np.geomspace(0.05, 60, 40)])
    true_tilt_points = np.array([true_tilt(b) for b in tilt_betas])
    curves["true-reward tilt (upper frontier)"] = (true_tilt_points[:, 0], true_tilt_points[:, 1])

    n_star = optimum(ht.BestOfN(2), 2, 100)
    n_int = max((np.floor(n_star), np.ceil(n_star)), key=lambda n: true_reward(ht.BestOfN(n)))
    mu_star = optimum(ht.BestOfPoisson(1), 1, 100)
    beta_star = optimum(ht.Tilted(1), 1, 100)
    results["optima"] = {
        "bon": {
            "n_continuous": n_star,
            "n": n_int,
            "true_reward": true_reward(ht.BestOfN(n_int)),
            "spec": {"n": 12.49, "true_reward": 0.6794},
        },
        "bop": {
            "mu": mu_star,
            "true_reward": true_reward(ht.BestOfPoisson(mu_star)),
            "spec": {"mu": 12.40, "true_reward": 0.6669},
        },
        "tilted": {
            "beta": beta_star,
            "true_reward": true_reward(ht.Tilted(beta_star)),
            "spec": {"beta": 13.53, "true_reward": 0.6658},
        },
        "sbon": sbon_optima,
    }
    results["values"] = {
        "bon_f128": true_reward(ht.BestOfN(128)),
        "bop_f127": true_reward(ht.BestOfPoisson(127)),
        "spec": {"bon_f128": 0.2203, "bop_f127": 0.2214},
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.2))
    cmap = plt.get_cmap("Greens")
    for name, (kl, f) in curves.items():
        if name.startswith("Soft"):
            n = int(name.split("n=")[1].rstrip(")"))
            ax.plot(kl, f, color=cmap(0.3 + 0.6 * np.log2(n) / 7), lw=1, label=name)
        elif "true-reward" in name:
            ax.plot(kl, f, "k:", lw=1.5, label=name)
        else:
            style = {
                "Best-of-n": ("#1f77b4", "-"),
                "Best-of-Poisson": ("#d62728", "-"),
                "proxy tilt": ("#7f7f7f", "--"),
            }[name]
            ax.plot(kl, f, style[1], color=style[0], lw=2, label=name)
    opt = results["optima"]
    for _key, mech, color in (
        ("bon", ht.BestOfN(opt["bon"]["n"]), "#1f77b4"),  # type: ignore[index]
        ("bop", ht.BestOfPoisson(opt["bop"]["mu"]), "#d62728"),  # type: ignore[index]
        ("tilted", ht.Tilted(opt["tilted"]["beta"]), "#7f7f7f"),
    ):  # type: ignore[index]
        ax.plot([mech.kl()], [true_reward(mech)], "o", color=color, mec="black", ms=8, zorder=5)
    ax.set_xlim(0, 5)
    ax.set_xlabel("KL(policy ‖ reference), nats")
    ax.set_ylabel("expected true reward R(u) = u¹²(1-u)/C")
    ax.set_title("The toy: every mechanism rises then falls (dots: HedgeTune's optima)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    for fmt in ("png", "svg"):
        fig.savefig(out / f"toy_reward_vs_kl.{fmt}", dpi=130)
    plt.close(fig)
    (out / "toy.json").write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, lambda results: print(json.dumps(results["optima"], indent=1, default=float)))
