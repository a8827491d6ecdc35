"""The experiment scripts run on reduced settings and reproduce the SPEC's numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_toy_experiment(tmp_path: Path) -> None:
    results = _load("toy").run(tmp_path, quick=True)
    optima = results["optima"]
    assert optima["bon"]["n"] in (12, 13) and optima["bon"]["n_continuous"] == pytest.approx(12.49, abs=0.01)
    assert optima["bop"]["mu"] == pytest.approx(12.40, abs=0.01)
    assert optima["tilted"]["beta"] == pytest.approx(13.53, abs=0.01)
    assert results["values"]["bon_f128"] == pytest.approx(0.2203, abs=1e-4)
    assert (tmp_path / "toy_reward_vs_kl.png").stat().st_size > 10_000
    assert (tmp_path / "toy.json").exists()


def test_bop_vs_tilt_experiment(tmp_path: Path) -> None:
    results = _load("bop_vs_tilt").run(tmp_path, quick=True)
    assert results["max_gap"] == pytest.approx(6.75e-4, abs=2e-5)
    assert (tmp_path / "bop_vs_tilt.png").exists()


def test_tent_experiment(tmp_path: Path) -> None:
    results = _load("tent").run(tmp_path, quick=True)
    assert set(results) == {"alpha=0.8", "alpha=0.85", "alpha=0.9", "alpha=0.95"}
    for entry in results.values():
        for mech in entry.values():  # type: ignore[union-attr]
            assert mech["regime"] == "rise-then-fall"
    assert (tmp_path / "tent.png").exists()


def test_real_data_experiment(tmp_path: Path) -> None:
    results = _load("real_data").run(tmp_path, quick=True)
    assert "alpacaeval" in results
    for table in results.values():
        for entry in table["proxies"].values():
            assert entry["bon"]["regime"] in {"increasing", "decreasing", "rise-then-fall", "fall-then-rise", "flat"}
            assert "tuned" in entry["bop_out_of_sample"]
    assert list(tmp_path.glob("real_*_out_of_sample.png"))
