"""The claims and summary tables as self-contained HTML pages: `snakemake --report` shows an HTML result
inside the report, where a CSV is only a download link, and a browser opens the same file.

The claims page leads with the verdicts: a tally, then one row per claim that starts with its verdict as
a coloured badge with a symbol (so it reads without colour too). Numbers are shown to three significant
digits; the CSV files keep every digit.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from .estimates import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, VERDICTS

# symbol, text colour, background
VERDICT_STYLE = {
    SUPPORTED: ("✓", "#1a7f37", "#dafbe1"),
    NOT_SUPPORTED: ("✗", "#cf222e", "#ffebe9"),
    INCONCLUSIVE: ("?", "#57606a", "#eaeef2"),
}

_CSS = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #1f2328; }
h1 { font-size: 1.3em; } p.note { color: #57606a; max-width: 60em; }
table { border-collapse: collapse; } th, td { border-bottom: 1px solid #d0d7de; padding: 4px 8px;
  vertical-align: top; text-align: left; } th { background: #f6f8fa; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.rule { color: #57606a; font-size: 0.85em; max-width: 28em; }
.verdict { display: inline-block; border-radius: 1em; padding: 1px 10px; font-weight: 600; white-space: nowrap; }
.tally .verdict { margin-right: 0.6em; }
"""


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(str(value))


def number(value: Any) -> str:
    """Three significant digits; a whole number as it is; a missing value as nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return ""
    if isinstance(value, (int, bool)) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e6):
        return str(int(value))
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return _text(value)


def badge(verdict: str) -> str:
    symbol, colour, background = VERDICT_STYLE.get(verdict, ("", "#1f2328", "#ffffff"))
    return f'<span class="verdict" style="color:{colour};background:{background}">{symbol} {_text(verdict)}</span>'


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_text(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{_text(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def tally(verdicts: Iterable[str]) -> dict[str, int]:
    """How many claims have each verdict, every verdict listed (0 if none)."""
    counts = pd.Series(list(verdicts), dtype=object).value_counts()
    return {v: int(counts.get(v, 0)) for v in VERDICTS}


def claims_page(claims: pd.DataFrame, experiment: str) -> str:
    """The claims table (`claims.COLUMNS`) as an HTML page, one row per claim, verdict first."""
    counts = tally(claims["verdict"])
    summary = " ".join(f"{badge(v)}<b>{n}</b>" for v, n in counts.items())
    rows = []
    for r in claims.itertuples(index=False):
        interval = f"[{number(r.ci_low)}, {number(r.ci_high)}]" if number(r.ci_low) else ""
        cells = [
            f"<td>{badge(r.verdict)}</td>",
            f"<td>{_text(r.figure)}</td>",
            f"<td>{_text(r.text)}</td>",
            f"<td>{_text(r.statistic)}</td>",
            f'<td class="num">{number(r.value)}</td>',
            f'<td class="num">{interval}</td>',
            f"<td>{_text(r.test)}</td>",
            f'<td class="num">{number(r.n_units)}</td>',
            f'<td class="num">{number(r.p_value)}</td>',
            f"<td>{_text(r.reason)}</td>",
            f'<td class="rule">{_text(r.rule)}</td>',
        ]
        rows.append(f'<tr id="claim-{_text(r.claim)}">' + "".join(cells) + "</tr>")
    body = (
        f'<p class="tally">{summary}</p>\n'
        f'<p class="note">Each claim of the paper checked on experiment {_text(experiment)}: the verdict, '
        "the statistic with its 95% interval, the test over independent units and its p-value, and the "
        "rule that made the verdict. The same table with every digit: claims.csv.</p>\n"
        + _table(
            [
                "verdict",
                "fig.",
                "claim",
                "statistic",
                "value",
                "95% interval",
                "test",
                "units",
                "p",
                "why inconclusive",
                "rule",
            ],
            rows,
        )
    )
    return _page(f"Claims: {experiment}", body)


def summary_page(summary: pd.DataFrame, experiment: str) -> str:
    """The summary table as an HTML page, one row per condition and spawn step, every column."""
    numeric = {c for c in summary.columns if c not in ("condition",)}
    rows = []
    for r in summary.itertuples(index=False):
        cells = [
            f'<td class="num">{number(v)}</td>' if c in numeric else f"<td>{_text(v)}</td>"
            for c, v in zip(summary.columns, r)
        ]
        rows.append(f'<tr id="summary-{_text(r.condition)}-t{number(r.t)}">' + "".join(cells) + "</tr>")
    body = (
        f'<p class="note">Headline numbers of experiment {_text(experiment)}, one row per condition and '
        "spawn step t, to three significant digits. The same table with every digit: summary.csv.</p>\n"
        + _table(list(summary.columns), rows)
    )
    return _page(f"Summary: {experiment}", body)


PAGES = {"claims": claims_page, "summary": summary_page}
