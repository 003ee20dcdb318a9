"""``edges``: the edge factory end to end (issue #13), as a click command.

Mounted as ``qts research edges`` (by :mod:`qts.cli`). It reuses the data options and loaders of
``qts backtest`` (:mod:`qts.cli.research`). Heavy imports (numba, scikit-learn)
happen inside the command.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .errors import InputError
from .research import _data_options


@click.command("edges")
@_data_options
@click.option("--window", type=click.IntRange(20, 5000), default=288, show_default=True,
              help="Bars of the robust z-scores' trailing median / MAD window.")
@click.option("--threshold", "thresholds", type=click.FloatRange(0.5, 20), multiple=True,
              help="Robust z-score that triggers a detector; repeatable (default: 2.5 and 3.5).")
@click.option("--horizon", type=click.IntRange(1, 2000), default=24, show_default=True,
              help="Triple barrier: time barrier in bars.")
@click.option("--tp", "tp_mult", type=click.FloatRange(0.01, 20), default=1.0, show_default=True,
              help="Take-profit barrier, in sigma x sqrt(horizon).")
@click.option("--sl", "sl_mult", type=click.FloatRange(0.01, 20), default=1.0, show_default=True,
              help="Stop-loss barrier, in sigma x sqrt(horizon).")
@click.option("--holdout", type=click.FloatRange(0.05, 0.95), default=0.3, show_default=True,
              help="Share of the candles held out for the gates.")
@click.option("--folds", type=click.IntRange(2, 20), default=4, show_default=True,
              help="Walk-forward test ranges of the in-sample meta-model.")
@click.option("--no-iforest", is_flag=True, help="Skip the IsolationForest detector.")
@click.option("--register", is_flag=True, help="Add a candidate that passed every gate to the registry as backtested.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report here (.md, or .json). Default: <state home>/reports/edges-<SYMBOL>-<tf>.md")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def edges_cmd(ctx, data_dir, synthetic, symbol, timeframe, days, seed, gate_items, window, thresholds, horizon,
              tp_mult, sl_mult, holdout, folds, no_iforest, register, report_path, as_json):
    """Edge factory: anomaly detectors (robust z-scores of returns, volume and high-low range; an
    IsolationForest fitted walk-forward), triple-barrier labels, a meta-labeling model whose probability
    sizes the entry, and the candidate `edge_meta` judged on held-out candles by the same gates as any
    strategy (walk-forward, DSR, PBO, look-ahead), plus a check that perturbing future candles changes
    nothing already decided. Writes a report; --register adds a passing candidate to the registry.
    """
    from pydantic import ValidationError

    from ..fsutil import write_atomic
    from ..paths import StateHome
    from .errors import input_errors
    from .research import _config, _gates, _load_candles

    ctx.ensure_object(dict)
    ctx.obj.setdefault("home", os.environ.get("QTS_HOME"))
    gates = _gates(gate_items)
    try:
        from ..research.edges.factory import FactoryConfig

        kw = {"window": window, "horizon": horizon, "tp_mult": tp_mult, "sl_mult": sl_mult, "holdout": holdout,
              "folds": folds, "iforest": not no_iforest}
        if thresholds:
            kw["thresholds"] = tuple(thresholds)
        cfg = FactoryConfig(**kw)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"--{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    candles, symbol, desc = _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed)
    config = _config(ctx)
    from ..research.edges.factory import STEPS, register_candidate, render_markdown, run_factory

    if not as_json:
        click.echo(f"data: {desc}", err=True)
    with click.progressbar(length=len(STEPS), label="edge factory", file=sys.stderr,
                           show_eta=False, item_show_func=lambda s: s) as bar:
        seen: list[str] = []

        def step(name):
            if seen:
                bar.update(1, name)
            else:
                bar.update(0, name)
            seen.append(name)

        with input_errors():
            try:
                result = run_factory(candles, cfg, gates=gates, config=config, step=step)
            except ValueError as e:
                raise InputError(str(e)) from None
        bar.update(len(STEPS) - bar.pos, "done")
    out = {"data": desc, "symbol": symbol, "synthetic": bool(synthetic), **result.as_dict()}
    tf = f"{int(candles.timeframe_ms // 60_000)}m"
    if report_path is None:
        report = StateHome.resolve(ctx.obj.get("home")).root / "reports" / f"edges-{symbol.replace('/', '_')}-{tf}.md"
    else:
        report = os.path.abspath(report_path)
    report = str(report)
    if report.endswith(".json"):
        write_atomic(report, json.dumps(out, indent=2, default=str))
    else:
        title = f"Edge factory: {symbol} {tf}" + (" (SYNTHETIC market)" if synthetic else "")
        write_atomic(report, render_markdown(result, title) + f"\nData: {desc}\n")
    out["report"] = report
    if register:
        if result.passed:
            e = register_candidate(StateHome.resolve(ctx.obj.get("home")), result, symbol=symbol,
                                   timeframe_minutes=candles.timeframe_ms / 60_000)
            out["registered"] = e.id
        else:
            out["registered"] = None
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    cand = result.candidate
    click.echo(f"detectors: {len(result.detectors)}; meta-models fitted: "
               f"{sum(1 for m in result.meta if 'oos' in m)}")
    if cand:
        click.echo(f"candidate: edge_meta on {cand['primary']} (out-of-sample AUC {cand['oos_auc']:.3f})")
        v = result.validation
        click.echo(("PASS" if result.passed else "FAIL") + ": " + ("; ".join(v["reasons"]) if v["reasons"] else
                                                                  "every gate passed"))
    else:
        click.echo("no candidate: " + "; ".join(result.notes))
    click.echo(f"look-ahead (future candles perturbed): {'none' if result.lookahead['ok'] else 'FOUND'}")
    if register:
        click.echo(f"registered: {out['registered']}" if out["registered"] else "not registered: the gates failed")
    click.echo(f"report: {report}")
