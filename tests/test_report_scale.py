"""The HTML report and `expman results` on a sweep of many trials: the best trials in
the plots (`--top`), every trial in the tables, tables that scroll in their box, and
bands that stay where the metric can be."""

from __future__ import annotations

import base64
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

import expman
from expman.results.plots import band, band_bounds, history_values

from .conftest import run_cli, write_yaml

TRIALS = 30

#: Two repeats far apart: repeat 0 near the bounds (loss near 0, acc near 1), repeat 1 not.
PIPES = """
from expman import Pipeline


class Spread(Pipeline):
    async def run(self, ctx):
        q = ctx.config.q
        for epoch in range(4):
            if ctx.repeat == 0:
                loss, acc = 0.01 * (1 + q), 0.99 - 0.001 * q
            else:
                loss, acc = 0.6 + 0.01 * q - 0.05 * epoch, 0.55 + 0.01 * epoch
            await ctx.epoch_end(epoch, {"loss": loss, "acc": acc})
        return {}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished experiment of 30 trials x 2 repeats reporting loss and acc."""
    base = tmp_path_factory.mktemp("sweep")
    root = base / "configs"
    root.mkdir()
    write_yaml(root / "experiment.yaml", {"name": "sweep", "id": 1, "desc": "", "settings": {}})
    write_yaml(root / "base.yaml", {"settings": {"pipeline": {"type": "spread_pipes:Spread"}}})
    write_yaml(
        root / "trials.yaml",
        [
            {"name": f"trial_{i:02d}", "id": i + 1, "repeat": 2, "settings": {"q": i}}
            for i in range(TRIALS)
        ],
    )
    (root / "spread_pipes.py").write_text(PIPES)
    done = run_cli("run", str(root), "-w", str(base / "ws"), "-j", "4", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "ws" / "sweep"


class Page(HTMLParser):
    """Tables with the classes of the elements around them, images, the style sheet."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, str]] = []
        self.tables: list[list[tuple[str, str]]] = []  # the elements around each table
        self.rows: list[int] = []  # body rows per table
        self.images: list[dict[str, str | None]] = []
        self.style = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append(list(self.open))
            self.rows.append(0)
        if tag == "tr" and self.open and self.open[-1][0] == "tbody":
            self.rows[-1] += 1
        if tag == "img":
            self.images.append(found)
        else:
            self.open.append((tag, found.get("class") or ""))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1][0] == "style":
            self.style += data
        self.text.append(data)


def report(exp: Path, out: Path, *args: str) -> Page:
    done = run_cli("report", str(exp), "-o", str(out), *args)
    assert done.returncode == 0, done.stderr
    page = Page()
    page.feed(out.read_text())
    return page


def png_height(image: dict[str, str | None]) -> int:
    data = base64.b64decode(str(image["src"]).split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">II", data[16:24])[1])


def test_plots_show_the_best_trials_and_the_tables_every_trial(sweep: Path, tmp_path: Path) -> None:
    """By default the plots show the 20 best of 30 trials and say so; `--top 5` draws a
    comparison chart of 5 bars, far shorter; either way the results table lists all 30
    trials and the table of runs all 60 runs."""
    default = report(sweep, tmp_path / "default.html")
    top5 = report(sweep, tmp_path / "top5.html", "--top", "5")
    for page, shown in ((default, 20), (top5, 5)):
        text = " ".join(page.text)
        assert f"The plots show the {shown} best trials by acc" in text
        assert page.rows[0] == TRIALS  # the results table
        assert page.rows[-1] == 2 * TRIALS  # every run
        alts = [str(image["alt"]) for image in page.images]
        assert alts == ["acc per trial", "acc learning curves", "loss learning curves"]
    heights = [png_height(page.images[0]) for page in (default, top5)]
    assert heights[1] < 500 < heights[0] < 1400, heights  # 0.55 inch per bar at 100 dpi
    assert (tmp_path / "top5.html").stat().st_size < (tmp_path / "default.html").stat().st_size


def test_every_table_scrolls_inside_its_box(sweep: Path, tmp_path: Path) -> None:
    """Each table sits in a box as wide as the page that scrolls sideways (CSS only, no
    script); texts of errors and reasons wrap inside their cells."""
    page = report(sweep, tmp_path / "report.html")
    assert len(page.tables) >= 3
    for around in page.tables:
        assert around[-1] == ("div", "scroll")
    rule = re.search(r"\.scroll\s*\{([^}]*)\}", page.style)
    assert rule is not None, page.style
    assert "overflow-x: auto" in rule.group(1)
    assert "max-width: 100%" in rule.group(1)
    assert re.search(r"td\.text\s*\{[^}]*overflow-wrap: anywhere", page.style)


def test_bands_stay_within_what_the_metric_can_be(sweep: Path) -> None:
    """Where mean - std of a loss falls below 0 its band stops at 0, and where mean + std
    of an accuracy passes 1 its band stops at 1; inside those bounds it is mean ± std."""
    results = expman.load_results(sweep)
    for metric, bounds in (("loss", (0.0, 1.0)), ("acc", (0.0, 1.0))):
        hist = results.history(metric)
        assert band_bounds(history_values(hist)) == bounds
        crossed = 0
        for curve in hist.trials.values():
            low, high = band(curve, bounds)
            for m, s, lo, hi in zip(curve.mean, curve.std, low, high, strict=True):
                crossed += m - s < 0 or m + s > 1
                assert lo == max(m - s, 0.0)
                assert hi == min(m + s, 1.0)
        assert crossed, f"no band of {metric} reached past its bounds: nothing was tested"
    assert band_bounds([0.5, 3.0]) == (0.0, None)  # a loss above 1: clipped at 0 only
    assert band_bounds([-2.0, -0.5]) == (None, 0.0)
    assert band_bounds([-1.0, 2.0]) == (None, None)


def test_results_top_k(sweep: Path) -> None:
    """`expman results --top K` gives the K best trials (runs with --runs) in every
    format, and says how many there are in all; K must be a whole number >= 1."""
    every = json.loads(run_cli("results", str(sweep), "--format", "json").stdout)["trials"]
    top = json.loads(run_cli("results", str(sweep), "--format", "json", "--top", "3").stdout)
    assert top["trials"] == every[:3]
    table = run_cli("results", str(sweep), "--top", "3").stdout.splitlines()
    assert "the 3 best of 30 trials" in table[0]
    assert [line.lstrip("* ").split()[:2] for line in table[2:]] == [
        [str(row["rank"]), row["trial"]] for row in every[:3]
    ]
    runs = json.loads(
        run_cli("results", str(sweep), "--runs", "--format", "json", "--top", "4").stdout
    )
    assert len(runs) == 4
    for bad in ("0", "-2", "many"):
        done = run_cli("results", str(sweep), "--top", bad)
        assert done.returncode == 2
        assert "--top: expected a whole number >= 1" in done.stderr
        assert "Traceback" not in done.stderr
