"""Candle files with gaps (issue 13): markets that close. Refused by default; with ``--gaps allow`` (or
``load_csv(allow_gaps=True)``) the rows run as they are: nothing is filled in, the gaps are counted and
reported, and CAGR is annualized by the calendar span, not by a 24/7 bar count. The HTML report shows the
expectancy and says the data had gaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli
from qts.market.candles import CandleFileError, load_csv
from qts.market.synthetic import generate

NO_ENV = {**{k: None for k in CONFIG_VARS}, "ANTHROPIC_API_KEY": None, "QTS_RESEARCH_MODEL": None,
          "QTS_DASK_SCHEDULER": None}
HOUR = 3_600_000
YEAR_MS = 365 * 86_400_000


def _gapped(tmp_path):
    """60 days of hourly candles with two closed stretches (48 and 72 candles removed)."""
    c = generate("ETH/USDT", 24 * 60, HOUR, seed=3)
    keep = np.ones(len(c), bool)
    keep[24 * 10:24 * 12] = False
    keep[24 * 30:24 * 33] = False
    idx = np.flatnonzero(keep)
    data = tmp_path / "data"
    data.mkdir()
    rows = "\n".join(f"{c.ts[i]},{c.open[i]},{c.high[i]},{c.low[i]},{c.close[i]},{c.volume[i]}" for i in idx)
    (data / "ETH_USDT-1h.csv").write_text("timestamp_ms,open,high,low,close,volume\n" + rows + "\n")
    return data, c.ts[idx]


def test_gaps_are_refused_by_default_and_counted_when_allowed(tmp_path):
    data, ts = _gapped(tmp_path)
    with pytest.raises(CandleFileError) as ei:
        load_csv(data / "ETH_USDT-1h.csv")
    assert ei.value.row == 24 * 10 + 1 and "48 candle(s) missing" in ei.value.reason
    c = load_csv(data / "ETH_USDT-1h.csv", allow_gaps=True)
    assert len(c) == len(ts) == 24 * 55 and c.gaps() == 2
    assert np.array_equal(c.ts, ts)  # nothing filled in


def test_other_checks_still_apply_with_gaps_allowed(tmp_path):
    data, _ = _gapped(tmp_path)
    p = data / "ETH_USDT-1h.csv"
    lines = p.read_text().splitlines(keepends=True)
    lines[5], lines[6] = lines[6], lines[5]  # rows 5 and 6 swapped: out of order
    p.write_text("".join(lines))
    with pytest.raises(CandleFileError) as ei:
        load_csv(p, allow_gaps=True)
    assert ei.value.row == 6 and "out of order" in ei.value.reason


def test_backtest_with_gaps_allowed_reports_them_and_annualizes_by_the_calendar(tmp_path):
    data, ts = _gapped(tmp_path)
    base = ["--home", str(tmp_path / "h"), "backtest", "sma_cross", "--data", str(data), "--symbol", "ETH/USDT",
            "--timeframe", "1h", "--param", "fast=5", "--param", "slow=20"]
    r = CliRunner().invoke(cli, base, env=NO_ENV)
    assert r.exit_code == 2 and "gap" in r.output and "row 241" in r.output, r.output
    html = tmp_path / "rep.html"
    r = CliRunner().invoke(cli, base + ["--gaps", "allow", "--json", "--report", str(html)], env=NO_ENV)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["gaps"] == 2 and "2 gaps" in out["data"]
    m = out["metrics"]
    years = (int(ts[-1]) - int(ts[0]) + HOUR) / YEAR_MS  # 60 calendar days, though only 55 days of rows
    assert m["cagr"] == pytest.approx((m["final_equity"] / 10_000.0) ** (1 / years) - 1, rel=1e-9)
    assert m["n_trades"] > 0
    text = html.read_text()
    assert "expectancy" in text and "2 gap(s) in the candles" in text


def test_report_shows_expectancy_without_gaps(tmp_path):
    html = tmp_path / "r.html"
    r = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "backtest", "sma_cross", "--synthetic", "--timeframe",
                                 "1h", "--days", "60", "--json", "--report", str(html)], env=NO_ENV)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["gaps"] == 0
    exp = out["metrics"]["expectancy"]
    text = html.read_text()
    # the KPI tile: the value as the report formats it, next to its label
    assert f"{exp:+,.2f}</b><span>expectancy</span>" in text
