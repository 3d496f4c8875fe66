"""The HTML report: one self-contained file with plots, tables, settings and failures.

Plots are drawn with matplotlib's Agg backend and embedded as base64 PNG data URIs;
the page has inline CSS and no scripts, so it opens offline and can be mailed.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from expman.formatting import counts_text, error_line, fmt, fmt_duration
from expman.results.loaded import Results
from expman.results.summary import History, Mode, Reduce, TrialSummary, resolve_metric
from expman.results.tables import fmt_stats
from expman.status import RunStatus, run_status

#: At most this many metrics get a learning-curve plot.
MAX_CURVES = 6

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eaf7ea; font-weight: 600; }
.completed { color: #1a7f37; } .failed { color: #c62828; font-weight: 600; }
.stopped { color: #b26a00; } .cancelled, .interrupted { color: #8e24aa; }
.plots img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #fafafa; padding: 0.5em; overflow-x: auto; }
"""


def _pyplot() -> Any:
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


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    fig.clf()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def curves_png(plt: Any, hist: History, trials: Sequence[str]) -> str:
    """Mean ± std of a metric per epoch, one line and band per trial."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, name in enumerate(trials):
        curve = hist.trials.get(name)
        if curve is None:
            continue
        color = f"C{i % 10}"
        low = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
        high = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
        ax.fill_between(curve.epochs, low, high, color=color, alpha=0.2, linewidth=0)
        n = max(curve.n)
        ax.plot(curve.epochs, curve.mean, color=color, label=f"{name} (n={n})", linewidth=1.8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    values = [v for c in hist.trials.values() for v in c.mean]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")  # losses falling over decades
    ax.set_xlabel("epoch")
    ax.set_ylabel(hist.metric)
    ax.set_title(f"{hist.metric}: mean ± std over repeats")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    data = _png(fig)
    plt.close(fig)
    return data


def comparison_png(plt: Any, rows: Sequence[TrialSummary], reduce: Reduce) -> str:
    """The metric per trial: bars at the mean, error bars of one std, dots for each run."""
    rows = [r for r in rows if r.stats.mean is not None]
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * max(len(rows), 2)))
    names = [r.trial for r in rows][::-1]
    means = [r.stats.mean or 0.0 for r in rows][::-1]
    errors = [r.stats.std or 0.0 for r in rows][::-1]
    colors = ["#2e7d32" if r.best else "#90a4ae" for r in rows][::-1]
    positions = list(range(len(rows)))
    ax.barh(positions, means, xerr=errors, color=colors, capsize=4, alpha=0.85)
    for pos, row in zip(positions, rows[::-1], strict=True):
        ax.scatter(row.stats.values, [pos] * len(row.stats.values), color="#222", s=12, zorder=3)
    ax.set_yticks(positions)
    ax.set_yticklabels(names)
    metric = rows[0].metric if rows else ""
    mode = rows[0].mode if rows else ""
    ax.set_xlabel(f"{metric} ({reduce} value per run; {mode} is better)")
    ax.set_title(f"{metric} per trial: mean ± std, dots are runs")
    if means:
        low = min(min(r.stats.values) for r in rows)
        high = max(max(r.stats.values) for r in rows)
        span = (high - low) or abs(high) or 1.0
        if low > 0 and low - span > 0:  # zoom in on the differences
            ax.set_xlim(low - 0.5 * span, high + 0.5 * span)
    ax.grid(axis="x", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        out += [cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _num(text: str) -> str:
    return f'<td class="num">{html.escape(text)}</td>'


def _status(status: str) -> str:
    return f'<td class="{html.escape(status)}">{html.escape(status)}</td>'


def render(
    results: Results,
    metric: str | None = None,
    mode: Mode | None = None,
    reduce: Reduce = "last",
) -> str:
    """The report of ``results`` as one HTML document."""
    plt = _pyplot()
    view = results.view
    metric, mode = resolve_metric(view, metric, mode)
    rows = results.summary(metric, mode, reduce)
    trial_names = [t.name for t in view.trials]
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>expman report: {esc(view.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(view.name)}</h1>",
        f'<p class="meta">{esc(str(view.path))}<br>state: <b>{esc(view.state)}</b>'
        f" &middot; runs: {esc(counts_text(view.counts))}"
        f" &middot; ranked by <b>{esc(metric)}</b> ({esc(mode)} is better,"
        f" {esc(reduce)} value of each run)"
        f" &middot; generated {esc(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>",
    ]

    # Results table.
    settings_keys = list(rows[0].settings) if rows else []
    others = [m for m in results.metrics if m != metric]
    header = ["", "#", "trial", *settings_keys, "n", f"{metric} mean ± std", "min", "max"]
    header += [f"{m} mean ± std" for m in others]
    table_rows = []
    for row in rows:
        cells = ["&#9733;" if row.best else "", esc(str(row.rank)), esc(row.trial)]
        cells += [esc(fmt(row.settings.get(k))) for k in settings_keys]
        cells += [
            _num(f"{row.n}/{row.runs}"),
            _num(fmt_stats(row.stats)),
            _num(fmt(row.stats.min)),
            _num(fmt(row.stats.max)),
        ]
        cells += [_num(fmt_stats(row.metrics[m])) for m in others if m in row.metrics]
        table_rows.append(cells)
    parts.append("<h2>Results</h2>")
    parts.append(_table(header, table_rows, ["best" if r.best else "" for r in rows]))

    # Plots.
    parts.append('<h2>Comparison</h2><div class="plots">')
    if any(r.stats.mean is not None for r in rows):
        parts.append(_img(comparison_png(plt, rows, reduce), f"{metric} per trial"))
    else:
        parts.append("<p>No completed run has reported this metric yet.</p>")
    parts.append('</div><h2>Learning curves</h2><div class="plots">')
    curve_metrics = [metric, *others][:MAX_CURVES]
    drawn = 0
    for name in curve_metrics:
        hist = results.history(name)
        if hist.trials:
            parts.append(_img(curves_png(plt, hist, trial_names), f"{name} learning curves"))
            drawn += 1
    if not drawn:
        parts.append("<p>No run has reported epoch metrics yet.</p>")
    parts.append("</div>")

    # Settings that differ.
    parts.append("<h2>Settings that differ between trials</h2>")
    differing = results.differing_settings()
    keys = list(next(iter(differing.values()), {}))
    if keys:
        parts.append(
            _table(
                ["trial", *keys],
                [[esc(t), *(esc(fmt(differing[t].get(k))) for k in keys)] for t in trial_names],
            )
        )
    else:
        parts.append("<p>All trials share the same settings.</p>")

    # Failures and stops.
    parts.append("<h2>Failed, stopped and unfinished runs</h2>")
    troubled = [r for r in view.runs if run_status(r.status) is not RunStatus.COMPLETED]
    if troubled:
        parts.append(
            _table(
                ["run", "status", "attempt", "epochs", "reason / error", "log"],
                [
                    [
                        esc(r.label),
                        _status(r.status),
                        _num(str(r.attempt or "-")),
                        _num(str(r.epochs)),
                        f"<code>{esc(error_line(r.error) or r.reason or '')}</code>",
                        f"<code>{esc(str(r.log_file.relative_to(view.path)))}</code>",
                    ]
                    for r in troubled
                ],
            )
        )
    else:
        parts.append("<p>None: every run completed.</p>")

    # Every run.
    parts.append("<h2>All runs</h2>")
    parts.append(
        _table(
            ["run", "status", "seed", "epochs", "duration", *results.metrics],
            [
                [
                    esc(r.label),
                    _status(r.status),
                    _num(fmt(r.seed)),
                    _num(str(r.epochs)),
                    _num(fmt_duration(r.duration)),
                    *(_num(fmt(r.metrics.get(m))) for m in results.metrics),
                ]
                for r in view.runs
            ],
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    results: Results,
    output: str | Path,
    metric: str | None = None,
    mode: Mode | None = None,
    reduce: Reduce = "last",
) -> Path:
    """Render the report and write it to ``output``; returns the path written."""
    path = Path(output)
    text = render(results, metric, mode, reduce)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
