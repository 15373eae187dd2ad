"""The HTML pages of the claims and summary tables that the report shows."""

import re

import pandas as pd

from coupledsgd.analysis import pages as P
from coupledsgd.analysis.claims import COLUMNS


def _claims() -> pd.DataFrame:
    rows = [dict(claim="gain-falls", figure="1a", text="The gain falls with t <fast>.", statistic="rho", value=-0.95,
                 ci_low=float("nan"), ci_high=float("nan"), interval="none", test="Page", n_units=4,
                 p_value=9.999e-05, rule="supported if p < 0.025", verdict="supported", reason=""),
            dict(claim="reinit-low-beats-high", figure="1i", text="Low beats high.", statistic="mean difference",
                 value=0.012345, ci_low=-0.00123, ci_high=0.0257, interval="t", test="paired t", n_units=4,
                 p_value=0.07, rule="supported if ...", verdict="inconclusive", reason="interval holds 0"),
            dict(claim="kl-rises", figure="1f", text="KL rises.", statistic="rho", value=0.2, ci_low=0.1,
                 ci_high=0.3, interval="t", test="t", n_units=3, p_value=0.9, rule="r",
                 verdict="not supported", reason="")]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_claims_page_has_a_row_per_claim_verdict_first_and_a_tally():
    page = P.claims_page(_claims(), "smoke")
    rows = re.findall(r'<tr id="claim-([\w-]+)"><td><span class="verdict" style="color:(#\w+);[^"]*">(.) ([a-z ]+)</span>',
                      page)
    assert rows == [("gain-falls", "#1a7f37", "✓", "supported"), ("reinit-low-beats-high", "#57606a", "?", "inconclusive"),
                    ("kl-rises", "#cf222e", "✗", "not supported")]
    tally = re.search(r'<p class="tally">(.*?)</p>', page).group(1)
    assert re.findall(r"</span><b>(\d+)</b>", tally) == ["1", "1", "1"]
    assert "&lt;fast&gt;" in page and "<fast>" not in page  # text is escaped
    row = re.search(r'<tr id="claim-reinit-low-beats-high">.*?</tr>', page).group(0)
    assert ">0.0123<" in row and ">[-0.00123, 0.0257]<" in row and ">0.07<" in row and ">interval holds 0<" in row
    assert ">0.0001<" in page and ">4<" in page  # p to three digits; a count whole


def test_tally_counts_every_verdict_including_absent_ones():
    assert P.tally(["supported", "supported", "inconclusive"]) == {"supported": 2, "not supported": 0,
                                                                  "inconclusive": 1}


def test_summary_page_has_every_row_and_column():
    summary = pd.DataFrame(dict(condition=["no-coupling", "coupled-to-t"], t=[0, 6], t_epoch=[0.0, 0.4],
                                gain=[0.032999999, float("nan")]))
    page = P.summary_page(summary, "smoke")
    assert re.findall(r'<tr id="summary-([\w-]+)-t(\d+)">', page) == [("no-coupling", "0"), ("coupled-to-t", "6")]
    assert re.findall(r"<th>([\w]+)</th>", page) == ["condition", "t", "t_epoch", "gain"]
    assert ">0.033<" in page and ">0.4<" in page
    row = re.search(r'<tr id="summary-coupled-to-t-t6">.*?</tr>', page).group(0)
    assert row.endswith('<td class="num"></td></tr>')  # a missing value shows as nothing
