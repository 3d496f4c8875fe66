"""The report's plots: matplotlib figures (Agg backend) as base64 PNG data.

Both plots show a bounded number of trials (the report passes its ``top`` best), so
a sweep of 500 trials gives figures of the same size as one of 20.

**Bands stay where the metric can be.**  A learning curve's band is the mean ± one
sample std over repeats, and a bar's error bar is the mean ± one std; both are
clipped to the range the metric's own values show it lives in: at 0 from below when
no value was ever negative (a loss, an accuracy), at 0 from above when none was ever
positive, and to [0, 1] when every value lies between 0 and 1 (accuracies,
fractions).  On a logarithmic axis (losses falling over decades) a band stops at
the smallest value seen.  Everything else about the band is unchanged: inside those
bounds it is exactly mean ± std.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from expman.results.summary import History, Reduce, TrialCurve, TrialSummary

#: The bounds a band is clipped to (None: unbounded on that side).
Bounds = tuple[float | None, float | None]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use.

    Imported here, not at the top: matplotlib is optional (``expman[report]``) and
    slow to import, and ``import expman`` must not load it.
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "the HTML report needs matplotlib: pip install 'expman[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(plt: Any, fig: Any) -> str:
    """The figure as base64 PNG data (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def band_bounds(values: Iterable[float]) -> Bounds:
    """Where a metric with these values can be, as far as they tell (module docstring)."""
    seen = [v for v in values if math.isfinite(v)]
    if not seen:
        return None, None
    low, high = min(seen), max(seen)
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    return (0.0 if low >= 0 else None), (0.0 if high <= 0 else None)


def clip(value: float, bounds: Bounds) -> float:
    low, high = bounds
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def band(curve: TrialCurve, bounds: Bounds) -> tuple[list[float], list[float]]:
    """A trial's band per epoch, mean - std to mean + std, clipped to ``bounds``."""
    low = [clip(m - s, bounds) for m, s in zip(curve.mean, curve.std, strict=True)]
    high = [clip(m + s, bounds) for m, s in zip(curve.mean, curve.std, strict=True)]
    return low, high


def history_values(hist: History) -> list[float]:
    """Every value of the metric, of every run at every epoch."""
    return [value for points in hist.runs.values() for _, value in points]


def curves_png(
    plt: Any,
    hist: History,
    trials: Sequence[str],
    note: str = "",
    pruned: Collection[str] = (),
) -> str:
    """Mean ± std of a metric per epoch, one line and band per trial of ``trials``.

    The trials in ``pruned`` are drawn dashed and labelled ``(pruned)``: a pruner cut
    them short, so their line ends where they stopped.
    """
    fig, ax = plt.subplots(figsize=(8, 4.2))
    values = history_values(hist)
    bounds = band_bounds(values)
    means = [v for name in trials if name in hist.trials for v in hist.trials[name].mean]
    log = bool(means) and min(means) > 0 and max(means) / min(means) > 100
    if log:  # losses falling over decades; a band stops at the smallest value seen
        bounds = (min(v for v in values if v > 0), bounds[1])
    for i, name in enumerate(trials):
        curve = hist.trials.get(name)
        if curve is None:
            continue
        color = f"C{i % 10}"
        low, high = band(curve, bounds)
        ax.fill_between(curve.epochs, low, high, color=color, alpha=0.2, linewidth=0)
        n = max(curve.n)
        cut = name in pruned
        label = f"{name} (n={n}{', pruned' if cut else ''})"
        style = "--" if cut else "-"
        ax.plot(curve.epochs, curve.mean, style, color=color, label=label, linewidth=1.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(hist.metric)
    ax.set_title(f"{hist.metric}: mean ± std over repeats{note}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(trials) > 10 else 1)
    return png(plt, fig)


def comparison_png(plt: Any, rows: Sequence[TrialSummary], reduce: Reduce, note: str = "") -> str:
    """The metric per trial: bars at the mean, error bars of one std, dots for each run."""
    rows = [r for r in rows if r.stats.mean is not None]
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * max(len(rows), 2)))
    bounds = band_bounds(v for r in rows for v in r.stats.values)
    names = [r.trial for r in rows][::-1]
    means = [r.stats.mean or 0.0 for r in rows][::-1]
    errors = [r.stats.std or 0.0 for r in rows][::-1]
    below = [m - clip(m - e, bounds) for m, e in zip(means, errors, strict=True)]
    above = [clip(m + e, bounds) - m for m, e in zip(means, errors, strict=True)]
    colors = ["#2e7d32" if r.best else "#90a4ae" for r in rows][::-1]
    positions = list(range(len(rows)))
    ax.barh(positions, means, xerr=[below, above], color=colors, capsize=4, alpha=0.85)
    for pos, row in zip(positions, rows[::-1], strict=True):
        ax.scatter(row.stats.values, [pos] * len(row.stats.values), color="#222", s=12, zorder=3)
    ax.set_yticks(positions)
    ax.set_yticklabels(names)
    metric = rows[0].metric if rows else ""
    mode = rows[0].mode if rows else ""
    ax.set_xlabel(f"{metric} ({reduce} value per run; {mode} is better)")
    ax.set_title(f"{metric} per trial: mean ± std, dots are runs{note}")
    if means:
        low = min(min(r.stats.values) for r in rows)
        high = max(max(r.stats.values) for r in rows)
        span = (high - low) or abs(high) or 1.0
        if low > 0 and low - span > 0:  # zoom in on the differences
            ax.set_xlim(low - 0.5 * span, high + 0.5 * span)
    ax.grid(axis="x", alpha=0.3)
    return png(plt, fig)
