"""``qts research compile`` through click's CliRunner: the examples file, the bootstrap and MIPROv2
optimizers, the atomic write, and the compiled program loaded back by ``qts research --program``.

Never calls a real model: ``qts.research.program.make_lm`` is replaced by one returning
``dspy.utils.DummyLM`` (scripted answers); MIPROv2 really runs (optuna, from the test extra).
"""

from __future__ import annotations

import json

import pytest

dspy = pytest.importorskip("dspy")
from click.testing import CliRunner  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

from qts.cli import cli  # noqa: E402
from qts.research import program as P  # noqa: E402

CLEAN = {
    "reasoning": "Range-bound market: mean reversion.",
    "candidates": [
        {"strategy": "rsi_reversion",
         "param_ranges": {"period": {"low": 7, "high": 21, "steps": 3}, "lower": {"low": 20, "high": 30, "steps": 2},
                          "upper": {"low": 55, "high": 65, "steps": 2}},
         "rationale": "range-bound windows dominate", "risks": ["a trend regime"]},
    ],
}
# MIPROv2's instruction proposer asks the same LM for these fields too
MIPRO_EXTRA = {"observations": "hourly crypto candles", "summary": "proposes candidates",
               "program_description": "proposes strategy candidates", "module_description": "one predictor",
               "proposed_instruction": "Prefer mean-reversion candidates with moderate ranges."}
# the synthetic market of tests/test_research_program.py::test_compile_with_dummylm: 90 days of 1h, seed 8
DATA = ["--synthetic", "--seed", "8", "--days", "90", "--timeframe", "1h"]
LOOSE = ["--gate", "min_trades=0", "--gate", "min_oos_trades=0", "--gate", "min_dsr=0", "--gate", "max_pbo=1",
         "--gate", "min_oos_sharpe=-100", "--gate", "max_oos_drawdown=1"]


@pytest.fixture
def lms(monkeypatch):
    """Every LM the commands make is a DummyLM answering ``answer``; the list keeps them for inspection."""
    class Made(list):
        pass

    made = Made()
    state = {"answer": CLEAN}

    def fake(model, **kw):
        lm = DummyLM({"": state["answer"]})
        made.append((model, lm))
        return lm

    monkeypatch.setattr(P, "make_lm", fake)
    made.state = state
    return made


def run(args, tmp_path):
    return CliRunner().invoke(cli, args, env={"QTS_HOME": str(tmp_path / "home"), "QTS_RESEARCH_MODEL": ""},
                              catch_exceptions=False)


def examples(tmp_path, *notes, name="examples.jsonl"):
    p = tmp_path / name
    p.write_text("# training examples\n" + "".join(json.dumps({"notes": n}) + "\n" for n in notes))
    return p


def _json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_bootstrap_compiles_writes_atomically_and_research_loads_it(tmp_path, lms):
    ex = examples(tmp_path, "notes one: RSI dips bounce", "notes two: ranges")
    out = tmp_path / "program.json"
    out.write_text("old")
    r = run(["research", "compile", "--examples", str(ex), *DATA, *LOOSE, "--model", "dummy/x", "--max-demos", "1",
             "--out", str(out), "--json"], tmp_path)
    assert r.exit_code == 0, r.output
    d = _json(r.output)
    assert d["optimizer"] == "bootstrap" and d["examples"] == 2 and d["demos"] == 1 and d["trials"] == 0
    assert [m for m, _ in lms] == ["dummy/x"]
    state = json.loads(out.read_text())  # replaced whole: the old text is gone, no temporary file left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (demo,) = state["propose.predict"]["demos"]
    assert demo["research_notes"] == "notes one: RSI dips bounce"   # the first window's example was accepted
    assert len(P.load_program(out).predictors()[0].demos) == 1

    # qts research --program PROGRAM.json: the demonstration is in what the model is sent
    notes = tmp_path / "notes.md"
    notes.write_text("fresh notes")
    r = run(["research", "--notes", str(notes), "--program", str(out), "--model", "dummy/y", *DATA, *LOOSE,
             "--no-register", "--max-candidates", "1"], tmp_path)
    assert r.exit_code == 0, r.output
    model, lm = lms[-1]
    assert model == "dummy/y"
    sent = json.dumps([h["messages"] for h in lm.history])
    assert "notes one: RSI dips bounce" in sent and "fresh notes" in sent


def test_strict_gates_keep_no_demonstration(tmp_path, lms):
    ex = examples(tmp_path, "notes one", "notes two")
    out = tmp_path / "p.json"
    r = run(["research", "compile", "--examples", str(ex), *DATA, "--model", "dummy/x", "--out", str(out)], tmp_path)
    assert r.exit_code == 0, r.output
    assert "compiled (bootstrap): 0 demonstrations" in r.output and "no demonstration passed" in r.output
    assert json.loads(out.read_text())["propose.predict"]["demos"] == []


def test_mipro_runs_trials_with_optuna(tmp_path, lms):
    pytest.importorskip("optuna")
    lms.state["answer"] = {**CLEAN, **MIPRO_EXTRA}
    ex = examples(tmp_path, "notes one", "notes two", "notes three")
    out = tmp_path / "mipro.json"
    r = run(["research", "compile", "--examples", str(ex), *DATA, *LOOSE, "--optimizer", "mipro", "--model",
             "dummy/x", "--max-demos", "1", "--out", str(out), "--json"], tmp_path)
    assert r.exit_code == 0, r.output
    d = _json(r.output)
    assert d["optimizer"] == "mipro" and d["trials"] >= 2 and d["best_score"] > 0
    assert d["demos"] <= 1
    loaded = P.load_program(out)
    assert loaded.predictors()[0].signature.instructions == d["instructions"]


def test_compile_errors_name_the_bad_field(tmp_path, lms):
    out = tmp_path / "p.json"
    out.write_text("keep me")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"notes": "fine"}\n{"note": "typo"}\n')
    r = run(["research", "compile", "--examples", str(bad), *DATA, "--model", "m", "--out", str(out)], tmp_path)
    assert r.exit_code == 2 and "line 2: notes: required" in r.output
    bad.write_text('{"notes": "fine"}\nnot json\n')
    r = run(["research", "compile", "--examples", str(bad), *DATA, "--model", "m", "--out", str(out)], tmp_path)
    assert r.exit_code == 2 and "line 2: not valid JSON" in r.output
    one = examples(tmp_path, "only one")
    r = run(["research", "compile", "--examples", str(one), *DATA, "--optimizer", "mipro", "--model", "m",
             "--out", str(out)], tmp_path)
    assert r.exit_code == 2 and "at least 2 examples" in r.output
    r = run(["research", "compile", "--examples", str(one), *DATA, "--out", str(out)], tmp_path)
    assert r.exit_code == 2 and "--model" in r.output
    r = run(["research", "compile", "--examples", str(one), *DATA, "--model", "m", "--out", str(tmp_path / "p.txt")],
            tmp_path)
    assert r.exit_code == 2 and "*.json" in r.output
    many = examples(tmp_path, *[f"n{i}" for i in range(40)], name="many.jsonl")
    r = run(["research", "compile", "--examples", str(many), *DATA, "--model", "m", "--out", str(out)], tmp_path)
    assert r.exit_code == 2 and "60+ per window" in r.output
    r = run(["research", "compile", "--examples", str(one), *DATA, "--model", "m", "--out", str(out),
             "--gate", "max_pbo=2"], tmp_path)
    assert r.exit_code == 2 and "--gate max_pbo" in r.output
    assert out.read_text() == "keep me" and lms == []  # nothing written, no model made


def test_read_examples_accepts_a_json_list(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps([{"notes": "a"}, {"notes": "b", "comment": "ignored"}]))
    assert P.read_examples(p) == ["a", "b"]
    p.write_text(json.dumps([{"notes": "a"}, "b"]))
    with pytest.raises(ValueError, match="item 2: expected an object"):
        P.read_examples(p)
    p.write_text("\n# only a comment\n")
    with pytest.raises(ValueError, match="no examples"):
        P.read_examples(p)
