"""The report page: one HTML file with its CSS inline and its images as data URIs.

Every value from the run directory is escaped; the page has no script and loads no font,
style sheet or image from anywhere, so it opens the same offline, attached to a mail or
years later.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import yaml

from dlmine import __version__
from dlmine.results.plots import png_size
from dlmine.rundir import now_iso


@dataclass
class Plot:
    """One PNG of the report: its file name, its caption and its bytes."""

    name: str
    title: str
    png: bytes


@dataclass
class RunFacts:
    """What a report shows, read from the run directory."""

    path: Path
    info: dict
    config_text: str
    evaluation: dict | None
    history: list[dict]
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    curve_scores: dict = field(default_factory=dict)



CSS = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 28px; margin: 0 0 6px; word-break: break-all; }
h2 { font-size: 18px; margin: 0 0 14px; }
.meta { color: var(--muted); display: flex; flex-wrap: wrap; gap: 4px 18px; align-items: center; }
.badge { padding: 1px 10px; border-radius: 999px; font-size: 13px; font-weight: 600;
         background: #e0e7ff; color: #3730a3; }
.badge.completed { background: #dcfce7; color: #166534; }
.badge.failed { background: #fee2e2; color: #991b1b; }
.badge.interrupted { background: #fef3c7; color: #92400e; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
          padding: 20px 24px; margin-top: 22px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px;
         margin-bottom: 18px; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 13px; }
.card .value { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .hint { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 13px; color: var(--muted); font-weight: 600; }
.num { text-align: right; }
tbody tr:nth-child(even) { background: #f9fafb; }
td code { word-break: break-all; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 22px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; text-align: center; margin-top: 6px; }
pre { background: #0f172a; color: #e2e8f0; padding: 16px; border-radius: 10px; overflow: auto;
      font-size: 13px; line-height: 1.45; margin: 0; }
.note { background: #fffbeb; border: 1px solid #fde68a; border-radius: 10px; padding: 10px 14px;
        margin-top: 16px; }
.note.error { background: #fef2f2; border-color: #fecaca; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 24px; }
"""


def render_html(facts: RunFacts) -> str:
    """The whole page for one run.

    Args:
        facts: what `dlmine.results.report.read_facts` read, with the plots made.

    Returns:
        The HTML text, self-contained.
    """
    title = escape(facts.path.name)
    body = "\n".join(part for part in (
        _header(facts), _results(facts), _plots(facts), _per_class(facts), _config(facts),
        _environment(facts)) if part)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title} - dlmine report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<main>\n{body}\n<footer>dlmine {escape(__version__)} report, generated "
            f"{escape(now_iso())}</footer>\n</main>\n</body>\n</html>\n")


def _header(facts: RunFacts) -> str:
    info = facts.info
    status = str(info.get("status", "unknown"))
    items = [f'<span class="badge {escape(status)}">{escape(status)}</span>',
             f"dataset <b>{escape(dataset_label(parse_config(facts.config_text)))}</b>",
             f"started {escape(timestamp(info.get('started')))}",
             f"duration {escape(duration(info.get('duration_s')))}",
             f"{info.get('epochs_completed', 0)} epochs completed"]
    notes = [f'<div class="note error"><b>Error:</b> {escape(str(info["error"]))}</div>'
             ] if info.get("error") else []
    notes += [f'<div class="note">{escape(note)}</div>' for note in facts.notes]
    return (f"<header><h1>{escape(facts.path.name)}</h1>\n<div class=\"meta\">"
            f"{''.join(f'<span>{item}</span>' for item in items)}</div>{''.join(notes)}</header>")


def _results(facts: RunFacts) -> str:
    evaluation = facts.evaluation or {}
    metrics = evaluation.get("metrics") or facts.info.get("final_metrics") or {}
    where = (f"{evaluation.get('split', 'test')} split, {evaluation.get('checkpoint', 'best')} "
             "checkpoint")
    cards = [(f"{name}", number(metrics[name]), where)
             for name in ("accuracy", "loss", "r2", "mae") if name in metrics]
    if "macro_f1" in evaluation:
        cards.append(("macro F1", number(evaluation["macro_f1"]), where))
    cards += [(name, number(value), where) for name, value in facts.curve_scores.items()]
    best = facts.info.get("best") or {}
    if best.get("value") is not None:
        cards.append((f"best {best.get('monitor')}", number(best["value"]),
                      f"epoch {best.get('epoch')}, mode {best.get('mode')}"))
    if not cards and not metrics:
        return "<section><h2>Results</h2><p>This run has no test metrics yet.</p></section>"
    rows = [(escape(str(k)), number(v)) for k, v in metrics.items()]
    return (f"<section><h2>Results</h2>\n<div class=\"cards\">{''.join(_card(*c) for c in cards)}"
            f"</div>\n{_table(['metric', 'value'], rows, numeric={1})}</section>")


def _card(label: str, value: str, hint: str) -> str:
    return (f'<div class="card"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div><div class="hint">{escape(hint)}</div></div>')


def _plots(facts: RunFacts) -> str:
    if not facts.plots:
        return ""
    figures = []
    for plot in facts.plots:
        width, height = png_size(plot.png)
        data = base64.b64encode(plot.png).decode("ascii")
        figures.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(plot.title)}" '
                       f'width="{width}" height="{height}"><figcaption>{escape(plot.title)}'
                       "</figcaption></figure>")
    return f'<section><h2>Plots</h2>\n<div class="plots">\n{chr(10).join(figures)}\n</div></section>'


def _per_class(facts: RunFacts) -> str:
    per_class = (facts.evaluation or {}).get("per_class")
    if not per_class:
        return ""
    rows = [(escape(name), number(v["precision"]), number(v["recall"]), number(v["f1"]),
             str(v["support"])) for name, v in per_class.items()]
    header = ["class", "precision", "recall", "F1", "support"]
    return f"<section><h2>Per class</h2>\n{_table(header, rows, numeric={1, 2, 3, 4})}</section>"


def _config(facts: RunFacts) -> str:
    return (f"<section><h2>Configuration</h2>\n<pre>{escape(facts.config_text.rstrip())}</pre>"
            "</section>")


def _environment(facts: RunFacts) -> str:
    info = facts.info
    rows = [(escape(k), escape(str(v))) for k, v in (info.get("versions") or {}).items()]
    for key in ("device", "seed", "input_shape", "num_classes", "started", "ended"):
        if info.get(key) is not None:
            rows.append((escape(key), escape(str(info[key]))))
    samples = info.get("samples") or {}
    if samples:
        rows.append(("samples", escape(", ".join(f"{k} {v}" for k, v in samples.items()))))
    if info.get("command"):
        rows.append(("command", f"<code>dlmine {escape(shlex.join(map(str, info['command'])))}</code>"))
    for key in ("data_fingerprint", "config_sha256"):
        if info.get(key):
            rows.append((escape(key), f"<code>{escape(str(info[key]))}</code>"))
    return f"<section><h2>Environment</h2>\n{_table(['', ''], rows, head=False)}</section>"


def _table(header: list[str], rows: list[tuple], numeric: set = frozenset(), head: bool = True) -> str:
    """An HTML table; cells are already escaped."""
    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="num">{text}</{tag}>' if i in numeric else f"<{tag}>{text}</{tag}>"

    thead = ("<thead><tr>" + "".join(cell("th", i, escape(h)) for i, h in enumerate(header))
             + "</tr></thead>") if head else ""
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def number(value) -> str:
    """A metric for people: 4 decimals, or 4 significant digits when very large or small."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}"


def duration(seconds) -> str:
    """`42.1s`, `3m 12s`, `2h 05m`; `-` when unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def timestamp(text) -> str:
    """`2026-11-28 05:05:05` from an ISO time; `-` when unknown."""
    return str(text).replace("T", " ")[:19] if text else "-"


def dataset_label(config: dict | None) -> str:
    """`digits`, or `npz: tiny.npz` for a file, from a config mapping; `?` when it has none."""
    dataset = (config or {}).get("dataset")
    if not isinstance(dataset, dict):
        return "?"
    name = str(dataset.get("name", "?"))
    path = dataset.get("path")
    return f"{name}: {str(path).replace(chr(92), '/').rsplit('/', 1)[-1]}" if path else name


def parse_config(text: str) -> dict | None:
    """The config mapping of a `config.yaml` text; None when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None
