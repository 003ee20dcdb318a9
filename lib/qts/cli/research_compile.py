"""``qts research compile``: compile the DSPy research program from examples (issue #13).

Mounted on the ``qts research`` group by :mod:`qts.cli`, like ``edges``. It reuses the data options and
loaders of :mod:`qts.cli.research`. dspy (and optuna, for MIPROv2) load inside the command only.
"""

from __future__ import annotations

import json
import os
import time

import click

from .errors import InputError
from .research import _data_options


@click.command("compile")
@click.option("--examples", "examples_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help='Training examples: JSON Lines, one {"notes": "..."} per line (or a JSON list of them); '
                   "one window of the candles per example.")
@_data_options
@click.option("--optimizer", type=click.Choice(["bootstrap", "random-search", "mipro"]), default="bootstrap",
              show_default=True, help="DSPy optimizer: BootstrapFewShot, its random search, or MIPROv2 "
                                      "(instructions too; needs optuna and 2+ examples).")
@click.option("--model", default=None, help="litellm model string (default: $QTS_RESEARCH_MODEL, or "
                                            "anthropic/claude-sonnet-4-5 when ANTHROPIC_API_KEY is set).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write the compiled program here (JSON); then: qts research --program PATH ...")
@click.option("--holdout", type=click.FloatRange(0.1, 0.9), default=0.4, show_default=True,
              help="Share of each example's window held out: the metric validates candidates there.")
@click.option("--max-demos", type=click.IntRange(0, 8), default=2, show_default=True,
              help="Most demonstrations the compiled program keeps.")
@click.option("--compile-seed", type=int, default=0, show_default=True, help="Seed of the optimizer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def compile_cmd(ctx, examples_path, data_dir, synthetic, symbol, timeframe, days, seed, gate_items, optimizer, model,
                out_path, holdout, max_demos, compile_seed, as_json):
    """Compile the research program: a DSPy optimizer keeps the demonstrations (and, with mipro, the
    instructions) whose candidates do best OUT OF SAMPLE after the validation gates, and the result is
    written atomically to --out for `qts research --program`.

    Examples file: JSON Lines, one object per line, {"notes": "research notes"} (UNTRUSTED text, like
    --notes); or one JSON list of such objects. The candles are cut into one window per example in
    file order; a window's first (1 - holdout) share gives the prompt's market statistics, its last
    share is held out: a proposed candidate scores its walk-forward out-of-sample Sharpe there if it
    passes the gates (--gate), 0 if not. Needs a model (--model or $QTS_RESEARCH_MODEL): every example
    is a model call, MIPROv2 makes dozens.
    """
    from .research import _config, _gates, _load_candles, _say

    if out_path.endswith(("/", "\\")):
        raise InputError(f"--out {out_path!r}: a file name, not a folder")
    if os.path.isdir(out_path):
        raise InputError(f"--out {out_path}: is a folder; give a file name like program.json")
    if not out_path.endswith(".json"):
        raise InputError(f"--out {out_path}: the compiled program is JSON; name it *.json")
    from ..research.program import read_examples, resolve_model

    try:
        notes = read_examples(examples_path)
    except (ValueError, OSError) as e:
        raise InputError(f"--examples {examples_path}: {e}") from None
    if optimizer != "bootstrap" and len(notes) < 2:
        raise InputError(f"--examples {examples_path}: --optimizer {optimizer} needs at least 2 examples "
                         f"(one to validate on), the file has {len(notes)}")
    chosen = resolve_model(model)
    if not chosen:
        raise InputError("--model: compiling needs a research model (--model or $QTS_RESEARCH_MODEL, e.g. "
                         "anthropic/claude-sonnet-4-5)")
    if optimizer == "mipro":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise InputError("--optimizer mipro: optuna is not installed: pip install optuna")
    say = (lambda m: None) if as_json else _say
    candles, symbol, desc = _load_candles(ctx, data_dir, synthetic, symbol, timeframe, days, seed)
    gates = _gates(gate_items)
    config = _config(ctx)
    seg = len(candles) // len(notes)
    if seg < 60:
        raise InputError(f"--examples: {len(notes)} examples cut {len(candles)} candles into windows of {seg} "
                         "bars; need 60+ per window (fewer examples, or more --days)")
    say(f"data: {desc}")
    say(f"compiling with {optimizer} on {len(notes)} example{'s' if len(notes) != 1 else ''} "
        f"({seg} bars each, the last {holdout:.0%} held out); model {chosen} ...")
    from ..research.program import compile_from_examples, make_lm, save_program

    t0 = time.monotonic()
    try:
        program = compile_from_examples(candles, notes, lm=make_lm(chosen), optimizer=optimizer, holdout=holdout,
                                        gates=gates, config=config, max_demos=max_demos, seed=compile_seed,
                                        symbol=symbol)
    except ValueError as e:
        raise InputError(str(e)) from None
    path = save_program(program, out_path)
    (pred,) = program.predictors()
    out = {"program": str(path), "optimizer": optimizer, "model": chosen, "examples": len(notes),
           "demos": len(pred.demos), "instructions": pred.signature.instructions,
           "best_score": getattr(program, "score", None), "trials": len(getattr(program, "trial_logs", None) or {}),
           "seconds": round(time.monotonic() - t0, 1), "data": desc, "synthetic": bool(synthetic)}
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    extra = f", {out['trials']} trials, best score {out['best_score']:.3g}" if out["trials"] else ""
    click.echo(f"compiled ({optimizer}): {out['demos']} demonstration{'s' if out['demos'] != 1 else ''}{extra}")
    click.echo(f"wrote {path}   next: qts research --program {path} --notes NOTES ...")
    if not out["demos"]:
        click.echo("note: no demonstration passed the gates out of sample; the program is the uncompiled one")
    if synthetic:
        click.echo("note: compiled on SYNTHETIC market data")
