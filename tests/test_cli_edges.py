"""The ``edges`` command (mounted as ``qts research edges``) through click's CliRunner on real candles."""

from __future__ import annotations

import json

from click.testing import CliRunner

from qts.cli import cli

FAST = ["--symbol", "BTC/USDT", "--timeframe", "5m", "--days", "40", "--window", "96", "--horizon", "12",
        "--threshold", "2.5", "--folds", "3"]


def run(args, home):
    return CliRunner().invoke(cli, ["research", "edges", *args], env={"QTS_HOME": str(home)}, catch_exceptions=False)


def test_edges_writes_a_markdown_report_and_json(tmp_path, ohlcv_dir):
    home = tmp_path / "home"
    r = run(["--data", str(ohlcv_dir), *FAST], home)
    assert r.exit_code == 0, r.output
    report = home / "reports" / "edges-BTC_USDT-5m.md"
    assert f"report: {report}" in r.output
    md = report.read_text()
    for section in ("## Detectors and labels (in-sample)", "## Meta-model, walk-forward out-of-sample",
                    "## Candidate", "## Gates (held-out candles)", "## Look-ahead"):
        assert section in md
    assert "| iforest | learned |" in md and "| ret_drop@2.5 | robust z-score |" in md
    assert not list(report.parent.glob(".*.tmp"))  # written atomically: no temporary file left
    out = tmp_path / "edges.json"
    r = run(["--data", str(ohlcv_dir), *FAST, "--json", "--report", str(out), "--no-iforest"], home)
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["report"] == str(out) and json.loads(out.read_text())["n_bars"] == d["n_bars"] == 40 * 288
    assert "iforest" not in {x["name"] for x in d["detectors"]}
    checks = {c["name"]: c for c in d["validation"]["checks"]}
    assert {"min_dsr", "max_pbo", "min_oos_sharpe", "no_lookahead"} <= set(checks)
    assert d["passed"] == all(c["passed"] for c in checks.values())
    assert d["lookahead"]["ok"] is True


def test_edges_errors_name_the_bad_field(tmp_path, ohlcv_dir):
    home = tmp_path / "home"
    r = run(["--data", str(ohlcv_dir), *FAST, "--gate", "max_pbo=2"], home)
    assert r.exit_code != 0 and "--gate max_pbo" in r.output
    r = run(["--data", str(ohlcv_dir), "--symbol", "BTC/USDT", "--timeframe", "5m", "--days", "1"], home)
    assert r.exit_code != 0 and "too few" in r.output
    r = run(["--data", str(ohlcv_dir), *FAST, "--holdout", "0.99"], home)
    assert r.exit_code == 2 and "--holdout" in r.output


def test_edges_register_adds_only_a_passing_candidate(tmp_path, ohlcv_dir):
    from qts.registry import Registry

    home = tmp_path / "home"
    r = run(["--data", str(ohlcv_dir), *FAST, "--no-iforest", "--register"], home)
    assert r.exit_code == 0, r.output
    if "FAIL:" in r.output:  # the default gates: nothing enters the registry
        assert "not registered: the gates failed" in r.output
        assert not Registry.load(home).entries
    loose = ["--gate", "min_trades=0", "--gate", "min_oos_trades=0", "--gate", "min_dsr=0", "--gate", "max_pbo=1",
             "--gate", "min_oos_sharpe=-100", "--gate", "max_oos_drawdown=1"]
    r = run(["--data", str(ohlcv_dir), *FAST, "--no-iforest", "--register", *loose], home)
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "registered: edge_meta-" in r.output
    [e] = Registry.load(home).entries
    assert e.strategy == "edge_meta" and e.stage == "backtested" and e.symbol == "BTC/USDT"
