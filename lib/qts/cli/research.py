"""``qts backtest`` and ``qts research``: the research pipeline from the command line.

Heavy imports (numba kernels, dspy, matplotlib) happen inside the commands, so ``qts --help`` and the
hooks stay fast.
"""

from __future__ import annotations

import json
import sys
import time

import click

from ..paths import StateHome
from .base import _iso, _parse_params, _settings, cli
from .errors import InputError


def _now() -> int:
    return int(time.time() * 1000)


def _home(ctx) -> StateHome:
    return StateHome.resolve(ctx.obj.get("home"))


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _tty() -> bool:
    return sys.stderr.isatty()


# -- options shared by backtest and research -----------------------------------------------------------

def _data_options(f):
    f = click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
                     help="Candle files in DIR (named like BTC_USDT-5m.csv).")(f)
    f = click.option("--synthetic", is_flag=True, help="The generated market (SYNTHETIC prices, seeded, offline).")(f)
    f = click.option("--symbol", default="BTC/USDT", show_default=True, help="Market, e.g. ETH/USDT.")(f)
    f = click.option("--timeframe", default=None, help="Candle timeframe (5m, 1h, ...). Default: TRADE_INTERVAL.")(f)
    f = click.option("--days", type=click.FloatRange(min=0.1, max=3650), default=None,
                     help="Use the last N days of --data, or generate N days (default 90) with --synthetic.")(f)
    f = click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated market.")(f)
    f = click.option("--gate", "gate_items", multiple=True, metavar="NAME=VALUE",
                     help="Override a validation gate, e.g. --gate min_trades=10 (looser than the defaults: "
                          "never eligible for live).")(f)
    return f


def _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed, allow_gaps=False):
    """(candles, symbol, description). ``allow_gaps``: candle files may miss candles (nothing filled in)."""
    from ..market.candles import TIMEFRAMES, find_files, load_csv, timeframe_of
    from .errors import input_errors

    if bool(data_dir) == bool(synthetic):
        raise InputError("choose the data: --data DIR (real candle files) or --synthetic (generated market)")
    symbol = symbol.upper()
    if "/" not in symbol:
        raise InputError(f"--symbol {symbol!r}: expected a market like BTC/USDT")
    if timeframe is None:
        minutes = _settings(ctx).TRADE_INTERVAL
        timeframe = timeframe_of(minutes)
    if timeframe not in TIMEFRAMES:
        raise InputError(f"--timeframe {timeframe!r}: one of {', '.join(TIMEFRAMES)}")
    minutes = TIMEFRAMES[timeframe]
    tf_ms = minutes * 60_000
    with input_errors():
        if synthetic:
            from ..market.synthetic import generate

            d = days or 90.0
            n = int(d * 86_400_000 // tf_ms)
            if n < 200:
                raise InputError(f"--days {d:g} at {timeframe} makes {n} candles; need 200+")
            return generate(symbol, n, tf_ms, seed=seed), symbol, f"SYNTHETIC {symbol} {timeframe}, {d:g} days, seed {seed}"
        path, factor = find_files(data_dir, [symbol], minutes)[symbol]
        c = load_csv(path, allow_gaps=allow_gaps).resample(factor)
        if days:
            keep = int(days * 86_400_000 // tf_ms)
            c = c.slice(max(0, len(c) - keep), len(c))
        if len(c) < 200:
            raise InputError(f"{path.name}: {len(c)} candles at {timeframe}; need 200+")
        return c, symbol, f"{path.name} ({len(c)} candles at {timeframe}, {_iso(int(c.ts[0]))} to {_iso(int(c.ts[-1]))})"


def _cluster_option(f):
    return click.option("--cluster", metavar="tcp://HOST:PORT", envvar="QTS_DASK_SCHEDULER", default=None,
                        help="Run the sweeps and walk-forward folds on this Dask scheduler (default: "
                             "$QTS_DASK_SCHEDULER; needs dask[distributed] here and this package on the workers).")(f)


def _check_cluster(address):
    """The scheduler address, checked before anything is loaded (connecting comes later)."""
    if not address:
        return None
    scheme, sep, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or not scheme or not host or not port.isdigit():
        raise InputError(f"--cluster {address!r}: expected a Dask scheduler address like tcp://HOST:8786")
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise InputError('--cluster: dask.distributed is not installed: pip install "dask[distributed]"')
    return address


class _Cluster:
    """``with _Cluster(address, say) as client``: a distributed Client on ``address`` (None: no cluster)."""

    def __init__(self, address, say):
        self.address, self.say, self.client = address, say, None

    def __enter__(self):
        if not self.address:
            return None
        from distributed import Client

        try:
            self.client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise InputError(f"--cluster {self.address}: cannot reach the Dask scheduler ({e})") from None
        n = len(self.client.scheduler_info().get("workers", {}))
        self.say(f"cluster: {self.address} ({n} worker{'s' if n != 1 else ''})")
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()


def _gates(items):
    from ..research.validation import Gates

    from pydantic import ValidationError

    try:
        return Gates(**_parse_params(items))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "gates"
        raise InputError(f"--gate {where}: {err['msg']}") from None


def _config(ctx):
    from ..research.backtest import BacktestConfig

    return BacktestConfig.from_settings(_settings(ctx))


def _parse_grid(items, strategy: str) -> dict:
    """--grid NAME=LOW:HIGH:STEP (inclusive) or NAME=a,b,c."""
    from ..strategies import strategy_class

    out = {}
    fields = strategy_class(strategy).Params.model_fields
    for item in items:
        k, sep, spec = item.partition("=")
        if not sep or not k or not spec:
            raise InputError(f"--grid {item!r}: expected NAME=LOW:HIGH:STEP or NAME=a,b,c")
        if k not in fields:
            raise InputError(f"--grid {k}: not a parameter of {strategy} ({', '.join(fields)})")
        try:
            if ":" in spec:
                parts = spec.split(":")
                if len(parts) != 3:
                    raise ValueError("LOW:HIGH:STEP")
                lo, hi, step = (float(x) for x in parts)
                if step <= 0 or hi < lo:
                    raise ValueError("STEP must be > 0 and HIGH >= LOW")
                n = int((hi - lo) / step + 1e-9) + 1
                if n > 10_000:
                    raise ValueError(f"{n} values: too many")
                vals = [lo + i * step for i in range(n)]
            else:
                vals = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError as e:
            raise InputError(f"--grid {item!r}: {e}") from None
        is_int = fields[k].annotation is int
        out[k] = sorted({int(round(v)) for v in vals}) if is_int else sorted({round(v, 10) for v in vals})
    return out


def _fmt_pct(v, nd=2) -> str:
    return "-" if v is None else f"{100 * v:+.{nd}f}%"


def _print_metrics(m: dict) -> None:
    click.echo(f"  total return {_fmt_pct(m['total_return'])}   CAGR {_fmt_pct(m['cagr'])}   "
               f"Sharpe {m['sharpe']:.2f}   Sortino {m['sortino']:.2f}   max drawdown {100 * m['max_drawdown']:.2f}%")
    wr = "-" if m["win_rate"] != m["win_rate"] else f"{100 * m['win_rate']:.1f}%"
    click.echo(f"  trades {m['n_trades']}   win rate {wr}   profit factor {m['profit_factor']:.2f}   "
               f"exposure {100 * m['exposure']:.1f}%   final equity {m['final_equity']:,.2f}")


def _print_verdict(rep) -> None:
    v = rep.verdict
    click.echo(f"validation: {'PASS' if v.passed else 'FAIL'}   trials {rep.n_trials}   "
               f"DSR {rep.dsr.dsr if rep.dsr else float('nan'):.3f}   PBO {rep.pbo.pbo if rep.pbo else float('nan'):.3f}   "
               f"selected {rep.best_params}")
    for c in v.checks:
        click.echo(f"  [{'ok' if c.passed else 'FAIL'}] {c.message}")
    st = rep.walk_forward.stats
    click.echo(f"  walk-forward OOS: return {_fmt_pct(st['total_return'])}  Sharpe {st['sharpe']:.2f}  "
               f"max drawdown {100 * st['max_drawdown']:.2f}%  trades {st['n_trades']}  ({len(rep.walk_forward.folds)} folds)")
    cv = getattr(rep, "cv", None)
    if cv is not None and cv.folds:
        click.echo(f"  purged CV: {len(cv.folds)} folds (purge {cv.purge}, embargo {cv.embargo} bars): test Sharpe "
                   + " ".join(f"{f.oos_sharpe:+.2f}" for f in cv.folds)
                   + f"; mean {cv.mean_oos_sharpe:.2f}, positive {sum(f.oos_sharpe > 0 for f in cv.folds)}/{len(cv.folds)}")
    rec = getattr(rep, "recursive", None)
    if rec is not None and not any(c.name == "stable_warmup" for c in v.checks):  # not gated: report it
        click.echo(f"  warm-up: {'ok' if rec.ok else 'FAIL'}: {rec.summary()}")


# -- qts backtest ------------------------------------------------------------------------------------------

@cli.command("backtest")
@click.argument("strategy")
@_data_options
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Fixed parameter, repeatable.")
@click.option("--grid", "grid_items", multiple=True, metavar="NAME=LOW:HIGH:STEP",
              help="Sweep a parameter (inclusive range, or a,b,c); the best by Sharpe is reported.")
@click.option("--validate", is_flag=True, help="Walk-forward, deflated Sharpe, PBO, look-ahead, warm-up: judged by "
                                              "the gates.")
@click.option("--purged-cv", "purged_cv", type=click.IntRange(2, 20), default=None, metavar="K",
              help="With --validate: purged k-fold cross-validation in K folds as a gate too (min_cv_positive, "
                   "min_cv_sharpe; purge and embargo = the grid's longest lookback).")
@click.option("--recursive", "recursive", is_flag=True,
              help="Recursive (warm-up) analysis of the parameters run: do decisions depend on history before "
                   "the strategy's declared lookback? (Part of --validate's gates anyway.)")
@click.option("--train", type=click.IntRange(min=2), default=None, help="Walk-forward training bars (default: a third).")
@click.option("--test", type=click.IntRange(min=1), default=None, help="Walk-forward test bars (default: a sixth).")
@click.option("--register", is_flag=True, help="With --validate: add a passing strategy to the registry as backtested.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML report here (and a PNG next to it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_cluster_option
@click.option("--gaps", type=click.Choice(["refuse", "allow"]), default="refuse", show_default=True,
              help="Candle files with missing candles (markets that close): allow runs on the rows as they are, "
                   "fills nothing in, and annualizes by the data's bars per calendar year.")
@click.pass_context
def backtest_cmd(ctx, strategy, data_dir, synthetic, symbol, timeframe, days, seed, gate_items, params, grid_items,
                 validate, purged_cv, recursive, train, test, register, report_path, as_json, cluster, gaps):
    """Vectorized backtest of STRATEGY (sma_cross, rsi_reversion, bollinger_reversion, zscore_reversion, or a
    user strategy file <home>/strategies/NAME.py: see `qts strategies list`).

    Fills at the next bar's open with the paper account's fee and slippage (FEE_BPS, SLIPPAGE_BPS).
    --grid sweeps parameters; --validate runs the overfitting gates (with no --grid, on a small
    neighbourhood of the parameters); --register puts a passing strategy in the registry as
    `backtested` (then: qts promote ID --to paper).
    """
    from .errors import input_errors
    from ..strategies import StrategyError, strategy_class

    try:  # a built-in or a user file in <home>/strategies/ (a file that fails to import: its path and error)
        cls = strategy_class(strategy, _settings(ctx).home)
    except StrategyError as e:
        raise InputError(str(e)) from None
    if register and not validate:
        raise InputError("--register needs --validate (only a validated strategy enters the registry)")
    if purged_cv and not validate:
        raise InputError("--purged-cv needs --validate (it is one of the validation gates)")
    fixed = _parse_params(params)
    grid = _parse_grid(grid_items, strategy)
    if not grid:
        try:
            cls(**fixed)  # a bad --param is refused before the candles are read
        except StrategyError as e:
            raise InputError(str(e)) from None
    cluster = _check_cluster(cluster) if (grid or validate) else None  # one backtest runs here
    candles, symbol, desc = _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed,
                                          allow_gaps=gaps == "allow")
    gates = _gates(gate_items)  # after the data: Gates imports the research package (numba)
    if purged_cv:
        gates = gates.model_copy(update={"purged_cv_folds": purged_cv})
    config = _config(ctx)
    n_gaps = candles.gaps()
    if n_gaps:  # a closing market: its bars per calendar year, not the 24/7 count, annualize (CAGR, Sharpe)
        desc += f", {n_gaps} gap{'s' if n_gaps != 1 else ''} (nothing filled in)"
        years = (int(candles.ts[-1]) - int(candles.ts[0]) + candles.timeframe_ms) / (365 * 86_400_000)
        config = config.model_copy(update={"periods_per_year": len(candles) / years})
    from ..research import backtest, sweep, validate_strategy
    from ..research.evaluation import expected_metrics, validation_summary, walk_forward_sizes
    from ..research.proposer import neighbourhood

    progress = True if _tty() else None
    out: dict = {"strategy": strategy, "data": desc, "synthetic": bool(synthetic), "gaps": n_gaps}
    if not as_json:
        _say(f"data: {desc}")
    with input_errors(), _Cluster(cluster, (lambda m: None) if as_json else _say) as client:
        try:
            if grid:
                full = {**{k: [v] for k, v in fixed.items()}, **grid}
                if not as_json:
                    _say(f"sweeping {strategy}: " + ", ".join(f"{k} x{len(v)}" for k, v in full.items()) + " ...")
                sw = sweep(strategy, candles, full, config, progress=progress, client=client)
                best = sw.best("sharpe", 1)
                if best < 0:
                    raise InputError(f"--grid: no valid combination traded ({sw.n_invalid} refused by {strategy})")
                df = sw.frame().sort_values("sharpe", ascending=False).head(10)
                out["sweep"] = {"combinations": sw.n_trials, "invalid": sw.n_invalid,
                                "top": json.loads(df.to_json(orient="records"))}
                run_params = sw.params[best]
                if not as_json:
                    click.echo(f"sweep: {sw.n_trials} combinations ({sw.n_invalid} invalid); best by Sharpe {run_params}")
                    for _, row in df.iterrows():
                        click.echo("  " + "  ".join(f"{k}={row[k]:g}" for k in sw.params[0]) +
                                   f"   Sharpe {row['sharpe']:.2f}  return {_fmt_pct(row['total_return'])}  "
                                   f"trades {int(row['n_trades'])}")
            else:
                run_params = fixed
            result = backtest(strategy, candles, config, params=run_params)
        except StrategyError as e:
            raise InputError(str(e)) from None
    m = result.metrics(monthly=False)  # monthly returns need pandas (~0.3 s): the report computes its own
    out["params"] = result.params
    out["metrics"] = {k: v for k, v in m.items() if k != "monthly_returns"}
    if not as_json:
        click.echo(f"{strategy} {result.params} on {symbol}" + ("   (SYNTHETIC market)" if synthetic else ""))
        _print_metrics(m)
    if recursive:
        from ..research.recursive import recursive_check

        rc = recursive_check(cls(**result.params), candles)
        out["recursive"] = {"ok": rc.ok, "lookback": rc.lookback, "starts": len(rc.starts), "first": rc.first,
                            "summary": rc.summary()}
        if not as_json:
            click.echo(f"warm-up: {'ok' if rc.ok else 'FAIL'}: {rc.summary()}")
    rep = None
    if validate:
        vgrid = ({**{k: [v] for k, v in fixed.items()}, **grid} if grid else neighbourhood(strategy, result.params))
        tr, te = walk_forward_sizes(len(candles))
        if not as_json:
            _say(f"validating on {len(candles)} bars (walk-forward train {train or tr}, test {test or te}) ...")
        with input_errors(), _Cluster(cluster, lambda m: None) as client:
            rep = validate_strategy(strategy, candles, vgrid, train=train or tr, test=test or te, config=config,
                                    gates=gates, progress=progress, client=client)
        data = {"symbol": symbol, "synthetic": bool(synthetic), "source": desc, "bars": len(candles),
                "timeframe_minutes": candles.timeframe_ms / 60_000, "start_ts": int(candles.ts[0]),
                "end_ts": int(candles.ts[-1])}
        summary = validation_summary(rep, gates, data, _now())
        out["validation"] = summary
        if not as_json:
            _print_verdict(rep)
        if register:
            out["registered"] = _register_validated(ctx, strategy, rep, candles, config, summary, symbol, vgrid,
                                                    as_json, expected_metrics)
    ref = None
    if report_path:
        from ..reports.backtest_report import write_backtest_report
        from ..research.referee import report_check

        ref = out["referee"] = report_check(candles, strategy, result)  # vectorbt recomputes it (loads only here)
        notes = [f"{n_gaps} gap(s) in the candles: nothing filled in, annualized by the data's bars per "
                 "calendar year"] if n_gaps else None
        paths = write_backtest_report(result, report_path, validation=rep, synthetic=bool(synthetic), symbol=symbol,
                                      notes=notes, referee=ref)
        out["report"] = {k: str(v) for k, v in paths.items()}
        if not as_json:
            click.echo(f"referee: {ref['message']}")
            click.echo(f"report: {paths['html']}  (PNG: {paths['png']})")
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    if ref and ref["agrees"] is False:  # loud: our engine and vectorbt differ
        click.echo(f"Error: {ref['message']}", err=True)
        ctx.exit(1)


def _register_validated(ctx, strategy, rep, candles, config, summary, symbol, grid, as_json, expected_metrics):
    from ..registry import Expected, Provenance, Registry, ValidationSummary

    if not rep.verdict.passed:
        if not as_json:
            click.echo("not registered: the validation failed")
        return None
    exp = expected_metrics(rep, candles, config)
    reg = Registry.load(_home(ctx))
    if not reg.ok and not as_json:
        _say(f"warning: {reg.problem}; a new registry is started (the damaged file is kept aside)")
    e = reg.add(strategy=strategy, params=rep.best_params, stage="backtested", symbol=symbol,
                timeframe_minutes=candles.timeframe_ms / 60_000,
                expected=Expected.model_validate({k: v for k, v in exp.items() if k in Expected.model_fields}),
                validation=ValidationSummary.model_validate(summary), grid={k: list(v) for k, v in grid.items()},
                provenance=Provenance(source="qts backtest"))
    if not as_json:
        click.echo(f"registered {e.id} as {e.stage} (expires {_iso(e.expires_ts)}); next: qts promote {e.id} --to paper")
    return e.id


# -- qts research --------------------------------------------------------------------------------------------

@cli.group("research", invoke_without_command=True, subcommand_metavar="[edges|compile ...]")
@click.option("--notes", "notes_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Research notes (text/markdown). UNTRUSTED: read as ideas, never as instructions. Required "
                   "for the proposal run (without a subcommand).")
@_data_options
@click.option("--model", default=None, help="litellm model string (default: $QTS_RESEARCH_MODEL, or "
                                            "anthropic/claude-sonnet-4-5 when ANTHROPIC_API_KEY is set).")
@click.option("--offline", is_flag=True, help="Never call a model: use the deterministic proposer.")
@click.option("--program", "program_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A compiled research program (JSON written by `qts research compile --out PATH`).")
@click.option("--holdout", type=click.FloatRange(0.1, 0.9), default=0.4, show_default=True,
              help="Share of the data (the most recent) held out for validation; the model sees statistics of "
                   "the rest only.")
@click.option("--max-candidates", type=click.IntRange(1, 8), default=4, show_default=True)
@click.option("--proposer-seed", type=int, default=0, show_default=True, help="Seed of the offline proposer.")
@click.option("--no-register", is_flag=True, help="Do not add survivors to the registry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_cluster_option
@click.pass_context
def research_cmd(ctx, notes_path, data_dir, synthetic, symbol, timeframe, days, seed, gate_items, model, offline,
                 program_path, holdout, max_candidates, proposer_seed, no_register, as_json, cluster):
    """Propose strategy candidates from notes and market statistics, validate them on held-out data,
    and add the survivors to the strategy registry as `backtested`.

    With a model configured the DSPy research program proposes; without one (or with --offline) the
    deterministic proposer does, so this runs offline. Notes cannot change limits, mode or the
    registry: a candidate is a strategy, parameter ranges, a rationale and risks, nothing more.

    Subcommands: `qts research edges` (the edge factory: anomalies, triple-barrier labels, meta-labeling),
    `qts research compile` (compile the DSPy research program from examples, for --program).
    """
    if ctx.invoked_subcommand is not None:
        return  # the group's own options belong to the proposal run
    if notes_path is None:
        raise click.UsageError("Missing option '--notes' (the proposal run needs research notes; or run a "
                               "subcommand, e.g. `qts research edges --help`)", ctx)
    from ..research.program import resolve_model

    cluster = _check_cluster(cluster)
    raw = open(notes_path, "rb").read(256 * 1024)
    notes = raw.decode("utf-8", "replace")
    gates = _gates(gate_items)
    candles, symbol, desc = _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed)
    config = _config(ctx)
    chosen = None if offline else resolve_model(model)
    program = None
    if program_path and chosen:
        from ..research.program import load_program

        try:
            program = load_program(program_path, max_candidates)
        except Exception as e:
            raise InputError(f"--program {program_path}: cannot load ({e.__class__.__name__}: {e})") from None
    say = (lambda m: None) if as_json else _say
    say(f"data: {desc}")
    say(f"proposer: {'model ' + chosen if chosen else 'deterministic (offline)'}; held out: the last "
        f"{holdout:.0%} of the bars")
    from ..research.pipeline import run_research

    home = None if no_register else _home(ctx)
    try:
        with _Cluster(cluster, say) as client:  # "dask" runs on this process's Client (get_client)
            res = run_research(candles, notes, symbol=symbol, model=chosen, program=program, seed=proposer_seed,
                               holdout=holdout, gates=gates, config=config, max_candidates=max_candidates,
                               home=home, synthetic=bool(synthetic), data_source=desc,
                               executor="dask" if client else "auto", on_progress=say)
    except ValueError as e:
        raise InputError(str(e)) from None
    if as_json:
        click.echo(json.dumps(res.as_dict(), indent=2, default=str))
        return
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"candidates ({res.source}):")
    for ev in res.evaluations:
        c = ev.candidate
        click.echo(f"  {c.describe()}")
        if c.rationale:
            click.echo(f"      why: {c.rationale[:300]}")
        if c.risks:
            click.echo(f"      risks: {'; '.join(c.risks)[:300]}")
        verdict = "PASS" if ev.passed else "FAIL"
        detail = ev.error or ("; ".join((ev.validation or {}).get("reasons", [])) if not ev.passed else
                              f"OOS Sharpe {ev.score:.2f}, selected {ev.params}")
        click.echo(f"      held-out validation: {verdict}: {detail[:400]}")
    for r in res.refused:
        click.echo(f"  refused: {r.strategy or '?'}: {r.reason}")
    if res.registered:
        click.echo("registered as backtested: " + ", ".join(res.registered) +
                   "   (next: qts registry show ID; qts promote ID --to paper)")
    elif no_register:
        click.echo("not registered (--no-register)")
    else:
        click.echo("no candidate passed the gates: nothing registered")
    if synthetic:
        click.echo("note: SYNTHETIC market data; entries validated on it can go to paper but never live")
