"""The HTML report: one self-contained file with plots, tables, settings and failures.

Plots (:mod:`expman.results.plots`) are embedded as base64 PNG data URIs; the page
has inline CSS and no scripts, so it opens offline and can be mailed.  Each table
sits in a box of the page's width that scrolls sideways when the table is wider;
long texts (errors, paths) wrap inside their cells.

The plots show the ``top`` best trials (20 by default), so their size does not grow
with the sweep; the tables list every trial and every run.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from expman.formatting import counts_text, error_line, fmt, fmt_duration
from expman.results.arguments import PLOTTED_TRIALS
from expman.results.loaded import Results
from expman.results.plots import comparison_png, curves_png, pyplot
from expman.results.reading import ExperimentRecord
from expman.results.summary import Mode, Reduce, Stats, TrialSummary
from expman.results.tables import fmt_stats, pruned_note
from expman.status import RunStatus, run_status
from expman.workspace.atomic import atomic_write
from expman.workspace.safepaths import inside

#: At most this many metrics get a learning-curve plot.
MAX_CURVES = 6

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; }
.scroll { max-width: 100%; overflow-x: auto; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left;
         white-space: nowrap; }
td.text { white-space: normal; overflow-wrap: anywhere; min-width: 18em; max-width: 40em; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eaf7ea; font-weight: 600; }
.completed { color: #1a7f37; } .failed { color: #c62828; font-weight: 600; }
.stopped { color: #b26a00; } .cancelled, .interrupted { color: #8e24aa; }
.pruned { color: #1565c0; } tr.pruned td { color: #546e7a; }
.plots img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #fafafa; padding: 0.5em; overflow-x: auto; }
"""


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        out += [cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row]
        out.append("</tr>")
    out.append("</tbody></table></div>")
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
    *,
    top: int = PLOTTED_TRIALS,
) -> str:
    """The report of ``results`` as one HTML document (plots of the ``top`` best trials)."""
    plt = pyplot()
    view = results.view
    metric, mode = results.resolve_metric(metric, mode)
    rows = results.summary(metric, mode, reduce)
    metrics = results.metrics
    esc = html.escape
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>expman report: {esc(view.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(view.name)}</h1>",
        f'<p class="meta">{esc(str(view.path))}<br>state: <b>{esc(view.state)}</b>'
        f" &middot; runs: {esc(counts_text(view.counts))}"
        f" &middot; trials: {esc(_trial_counts(rows))}"
        f" &middot; ranked by <b>{esc(metric)}</b> ({esc(mode)} is better,"
        f" {esc(reduce)} value of each run)"
        f" &middot; generated {esc(generated)}</p>",
        "<h2>Results</h2>",
        _results_table(rows, metric, metrics),
        *_plots(plt, results, rows, metric, metrics, reduce, top),
        "<h2>Settings that differ between trials</h2>",
        _settings_table(results),
        "<h2>Failed, stopped, pruned and unfinished runs</h2>",
        _troubled_table(view),
        "<h2>All runs</h2>",
        _runs_table(view, metrics),
        "</body></html>",
    ]
    return "\n".join(parts)


def _results_table(rows: Sequence[TrialSummary], metric: str, metrics: Sequence[str]) -> str:
    """Every trial, ranked: n, mean ± std, min, max, settings, the other metrics."""
    esc = html.escape
    settings_keys = list(rows[0].settings) if rows else []
    others = [m for m in metrics if m != metric]
    pruned = any(row.pruned for row in rows)
    header = ["", "#", "trial", *(["pruned"] if pruned else []), *settings_keys, "n"]
    header += [f"{metric} mean ± std", "min", "max", *(f"{m} mean ± std" for m in others)]
    empty = Stats.of([])
    table_rows = []
    for row in rows:
        cells = ["&#9733;" if row.best else "", esc(str(row.rank)), esc(row.trial)]
        if pruned:
            note = esc(pruned_note(row))
            title = f' title="{esc(row.reason)}"' if row.reason else ""
            cells.append(f'<td class="pruned"{title}>{note}</td>' if note else "")
        cells += [esc(fmt(row.settings.get(k))) for k in settings_keys]
        cells += [
            _num(f"{row.n}/{row.runs}"),
            _num(fmt_stats(row.stats)),
            _num(fmt(row.stats.min)),
            _num(fmt(row.stats.max)),
        ]
        cells += [_num(fmt_stats(row.metrics.get(m, empty))) for m in others]
        table_rows.append(cells)
    classes = ["best" if r.best else "pruned" if r.pruned else "" for r in rows]
    return _table(header, table_rows, classes)


def _trial_counts(rows: Sequence[TrialSummary]) -> str:
    """``3 complete, 1 pruned``: the trials by their status."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts_text(counts)


def _plots(
    plt: Any,
    results: Results,
    rows: Sequence[TrialSummary],
    metric: str,
    metrics: Sequence[str],
    reduce: Reduce,
    top: int,
) -> list[str]:
    """The comparison chart and the learning curves, of the ``top`` best trials."""
    # A pruned trial's value is where it stopped: not compared, but its curve is drawn.
    valued = [r for r in rows if r.stats.mean is not None and not r.pruned]
    shown = valued[:top]
    note = f" (the {len(shown)} best of {len(valued)} trials)" if len(valued) > len(shown) else ""
    parts = ['<h2>Comparison</h2><div class="plots">']
    if shown:
        parts.append(_img(comparison_png(plt, shown, reduce, note), f"{metric} per trial"))
    else:
        parts.append("<p>No completed run has reported this metric yet.</p>")
    pruned = [r for r in rows if r.pruned]
    if pruned:
        parts.append(
            f"<p>{len(pruned)} pruned trial{'s are' if len(pruned) > 1 else ' is'} left out of"
            " the comparison (a pruned value is where the trial stopped, not a result);"
            " their learning curves are drawn dashed, marked (pruned).</p>"
        )
    if note:
        parts.append(
            f"<p>The plots show the {len(shown)} best trials by {html.escape(metric)}"
            f" (<code>expman report --top K</code> for more); the tables list all.</p>"
        )
    parts.append('</div><h2>Learning curves</h2><div class="plots">')
    # Without a ranked value yet (nothing finished), the first trials in plan order.
    trials = [r.trial for r in shown] or [t.name for t in results.trials][:top]
    room = max(0, top - len(trials))
    trials += [r.trial for r in pruned if r.trial not in trials][:room]
    marked = {r.trial for r in pruned}
    drawn = 0
    for name in [metric, *(m for m in metrics if m != metric)][:MAX_CURVES]:
        hist = results.history(name)
        if any(t in hist.trials for t in trials):
            image = curves_png(plt, hist, trials, note, pruned=marked)
            parts.append(_img(image, f"{name} learning curves"))
            drawn += 1
    if not drawn:
        parts.append("<p>No run has reported epoch metrics yet.</p>")
    parts.append("</div>")
    return parts


def _settings_table(results: Results) -> str:
    esc = html.escape
    differing = results.differing_settings()
    keys = list(next(iter(differing.values()), {}))
    if not keys:
        return "<p>All trials share the same settings.</p>"
    return _table(
        ["trial", *keys],
        [
            [esc(t.name), *(esc(fmt(differing[t.name].get(k))) for k in keys)]
            for t in results.trials
        ],
    )


def _troubled_table(view: ExperimentRecord) -> str:
    """Failed, stopped and unfinished runs with their reasons and logs."""
    esc = html.escape
    troubled = [r for r in view.runs if run_status(r.status) is not RunStatus.COMPLETED]
    if not troubled:
        return "<p>None: every run completed.</p>"
    return _table(
        ["run", "status", "attempt", "epochs", "reason / error", "log"],
        [
            [
                esc(r.label),
                _status(r.status),
                _num(str(r.attempt or "-")),
                _num(str(r.epochs)),
                f'<td class="text"><code>{esc(error_line(r.error) or r.reason or "")}</code></td>',
                f"<code>{esc(str(r.log_file.relative_to(view.path)))}</code>",
            ]
            for r in troubled
        ],
    )


def _runs_table(view: ExperimentRecord, metrics: Sequence[str]) -> str:
    esc = html.escape
    return _table(
        ["run", "status", "seed", "epochs", "duration", *metrics],
        [
            [
                esc(r.label),
                _status(r.status),
                _num(fmt(r.seed)),
                _num(str(r.epochs)),
                _num(fmt_duration(r.duration)),
                *(_num(fmt(r.metrics.get(m))) for m in metrics),
            ]
            for r in view.runs
        ],
    )


def write_report(
    results: Results,
    output: str | Path,
    metric: str | None = None,
    mode: Mode | None = None,
    reduce: Reduce = "last",
    *,
    top: int = PLOTTED_TRIALS,
) -> Path:
    """Render the report and write it to ``output``; returns the path written."""
    path = Path(output)
    text = render(results, metric, mode, reduce, top=top)
    if inside(path, results.path):  # never through a link planted in the experiment folder
        atomic_write(path, text.encode("utf-8"), within=results.path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
