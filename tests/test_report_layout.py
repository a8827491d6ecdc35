"""The report reads as a person sees it: headless Chromium renders it at 800 and 1400 px wide; the
recommendation comes first, no column is clipped, figures are legible and open full size; figures'
axes stay where the curves are and every band is in a legend."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main

MEASURE = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement;
  const tables = [...document.querySelectorAll('table')].filter(t => t.offsetParent !== null);
  const clipped = tables.filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length;
  const imgs = [...document.querySelectorAll('figure img')];
  const linked = imgs.filter(i => i.parentElement.tagName === 'A' && i.parentElement.getAttribute('href').endsWith('.png')).length;
  const first = document.querySelector('h1').nextElementSibling;
  document.body.setAttribute('data-layout', JSON.stringify({
    width: window.innerWidth, page_overflow: root.scrollWidth > root.clientWidth + 1, clipped_tables: clipped,
    tables: tables.length, images: imgs.length, linked: linked,
    min_image_width: Math.min(...imgs.map(i => i.getBoundingClientRect().width)),
    first_block: first ? first.className : '', first_text: first ? first.textContent.slice(0, 40) : ''}));
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("HEDGETUNE_NO_SKIP"):
        pytest.fail("headless Chromium is not installed (./dev test installs it with apt-get)")
    pytest.skip("headless Chromium is not installed")


def _layout(page: Path, width: int) -> dict[str, object]:
    probe = page.with_name(f"probe_{width}.html")
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    out = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},1600",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'data-layout="([^"]*)"', out.stdout)
    assert found, out.stderr[-2000:]
    return dict(json.loads(html.unescape(found.group(1))))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    gold = ht.synthetic.toy_reward(rng.random((60, 12)))
    proxies = {"good": gold + rng.normal(0, 0.05, gold.shape), "noisy_long_proxy_name": rng.random(gold.shape)}
    folder = tmp_path_factory.mktemp("report")
    ht.write_table(ht.RewardTable.from_arrays(proxies, gold), folder / "t.parquet")
    out = CliRunner().invoke(main, ["report", str(folder / "t.parquet"), "--out", str(folder / "r"), "--bootstrap", "100"])
    assert out.exit_code == 0, out.output
    return folder / "r" / "report.html"


@pytest.mark.parametrize("width", [800, 1400])
def test_the_report_reads_at_800_and_1400_px(report: Path, width: int) -> None:
    layout = _layout(report, width)
    assert layout["first_block"] == "answer" and "What to deploy" in str(layout["first_text"])
    assert layout["page_overflow"] is False and layout["clipped_tables"] == 0, layout
    assert layout["images"] and layout["linked"] == layout["images"]  # every figure opens full size
    for link in re.findall(r'<a href="([^"]+\.png)"', report.read_text()):
        assert (report.parent / link).is_file()
    if width == 1400:
        assert float(layout["min_image_width"]) >= 520, layout  # legible: legends at a readable size
    else:
        assert float(layout["min_image_width"]) >= 700, layout  # one figure per row on a narrow screen


def test_hacking_figure_axes_stay_on_the_curve() -> None:
    """Review: a Best-of-Poisson figure spanned 1e-16 to 1, 70% of it a grey block in no legend."""
    from hedgetune.report import figures

    rng = np.random.default_rng(1)
    gold = rng.random((80, 11))
    table = ht.RewardTable.from_arrays({"anti": -gold + rng.normal(0, 0.1, gold.shape)}, gold)
    tuned = ht.tune(table, "bop", bootstrap=100)
    c = ht.curve(table, "bop", bootstrap=100)
    fig = figures.hacking_curve(c, tuned)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    positive = c.theta[c.theta > 0]
    assert low >= positive.min() * (1 - 1e-9) and high <= positive.max() * 1.06
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("HedgeTune" in t for t in labels)
    for patch in ax.patches:  # every shaded band has a legend entry
        assert patch.get_label() in labels or patch.get_label().startswith("_")
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("text", [
    "prompt_id,proxy_reward,true_reward\n0,1,1\n0,2,0\n0,3,1\n1,1,1\n1,2,0\n2,5,1\n2,1,0\n",  # 3 prompts, pools of 2-3
    "prompt_id,proxy_reward,true_reward\n0,1,1\n0,2,0\n1,1,1\n1,2,0\n2,5,1\n2,1,0\n3,2,1\n3,1,0\n4,3,0\n4,1,1\n",
])
def test_report_on_small_valid_tables(text: str, tmp_path: Path) -> None:
    """Issue 28: `report` crashed on valid small tables (fewer than 4 prompts, or pools under 4):
    what the table cannot support is skipped and said, the rest reported."""
    (tmp_path / "t.csv").write_text(text)
    out = CliRunner().invoke(main, ["report", str(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), "--bootstrap", "30"])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Not analysed" in page and "What to deploy" in page
