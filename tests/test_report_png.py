"""`qts report --png`: the HTML report's sections as one image, labelled SYNTHETIC when the market was generated.

The headings the PNG claims (its text metadata) are compared with the headings of the HTML written in the
same run (parsed here), and the label with where the session's prices came from; the image must not be
blank. Real candles come from the shared data folder (skipped without it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}


def invoke(args):
    return CliRunner().invoke(cli, args, env=NO_ENV, catch_exceptions=False)


def report(home: Path, out: Path) -> tuple[dict, str, dict]:
    from PIL import Image

    r = invoke(["--home", str(home), "report", "--out", str(out), "--png", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    html = Path(res["html"]).read_text(encoding="utf-8")
    im = Image.open(res["png"])
    im.load()
    return res, html, dict(im.text)


def headings(html: str) -> set[str]:
    return {re.sub(r"<small>.*?</small>|<[^>]+>", "", h).strip()
            for h in re.findall(r"<h[23]>(.*?)</h[23]>", html, flags=re.S)}


def test_png_sections_match_the_html_and_say_synthetic(tmp_path):
    from test_report_html import pixel_stats

    home = tmp_path / "home"
    assert invoke(["--home", str(home), "run", "--days", "2", "--quiet"]).exit_code == 0
    res, html, meta = report(home, tmp_path / "r.html")
    drawn = [s.strip() for s in meta["Description"].removeprefix("Sections: ").split("|")]
    html_heads = headings(html)
    # every section of the image is a section of the page (a per-symbol price panel under "Trades on price")
    assert {re.sub(r":.*", "", s) for s in drawn} <= html_heads
    # and the page's charts and summary tables are all in the image
    assert {"Equity", "Drawdown from peak", "Positions over time", "Trades on price", "Daily returns", "By strategy",
            "Predicted vs realized", "Gate refusals"} <= {re.sub(r":.*", "", s) for s in drawn}
    assert [s for s in drawn if s.startswith("Trades on price: ")] == [
        f"Trades on price: {s}" for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")]
    assert "SYNTHETIC" in meta["Title"] and "SYNTHETIC" in html
    var, colours, (w, h) = pixel_stats(Path(res["png"]).read_bytes())
    assert var > 100 and colours > 5 and h > w  # one tall page of sections, not one chart


def test_png_of_real_candles_is_not_labelled_synthetic(tmp_path, ohlcv_dir):
    home = tmp_path / "home"
    r = invoke(["--home", str(home), "run", "--data", str(ohlcv_dir), "--days", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    _, html, meta = report(home, tmp_path / "r.html")
    assert "SYNTHETIC" not in meta["Title"] and "SYNTHETIC" not in meta["Description"]
