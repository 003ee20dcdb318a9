"""Claude Code hook latency: whole processes, the way Claude Code runs them (`python3 -S hooks/_hook.py EVENT`).

Every Bash call of the assistant pays for PreToolUse, so its cost matters. Measured, each at least 30 times,
interleaved so drift on the machine hits all of them alike:
- baseline: `python3 -c pass` (the floor of any Python hook);
- PreToolUse for an ordinary command (`ls -la`): parse, classify, answer nothing;
- PreToolUse for a trade command (`qts order buy BTC/USDT 0.01`) against a state home with a database,
  breaker file and kill-switch history: the early pre-trade verdict.
Targets: ordinary p50 within 2.5x the baseline and p95 < 100 ms; trade p50 < 300 ms.

Then the time budget for hostile input (issue #11):
- PreToolUse on a 1 MB command made of a prefix that made the old patterns quadratic, as the real hook
  process: must answer within 1 s (it is refused unread as too long); and on a 99 KB one, just under the
  cap, which is parsed and judged; against the old classify (git 63bd4ae) timed in-process on a 5 KB slice
  of the same input, the ratio shows the old growth;
- UserPromptSubmit with a PIN set (real cost, scrypt N=2**17): a 300-word prompt with 20 number-like
  words, p95 < 200 ms; the same prompt against a legacy record (four full scrypts, the old behaviour) as
  the baseline, and a prompt holding one PIN-like word (one scrypt) for scale.
Usage: python bench/bench_hooks.py [RUNS]   (exit 1 when a target is missed)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, row

HOOK = ROOT / "hooks" / "_hook.py"
PATH_PY = shutil.which("python3") or sys.executable  # what hooks.json's `python3` resolves to here


def real_interpreter(py: str) -> str:
    """Behind a version-manager shim (pyenv: a shell script) the interpreter itself."""
    out = subprocess.run([py, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or py


PY = real_interpreter(PATH_PY)


def payload(cmd: str) -> bytes:
    return json.dumps({"session_id": "bench", "transcript_path": "/tmp/bench.jsonl", "cwd": str(ROOT),
                       "prompt_id": "p", "permission_mode": "default", "effort": {"level": "high"},
                       "hook_event_name": "PreToolUse", "tool_name": "Bash",
                       "tool_input": {"command": cmd, "description": "bench"}, "tool_use_id": "toolu_bench"}).encode()


def timed(args: list[str], data: bytes | None, env: dict) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    p = subprocess.run(args, input=data, capture_output=True, env=env, timeout=60)
    ms = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        raise SystemExit(f"{args} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return ms, p.stdout


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def make_home(tmp: Path) -> Path:
    """A state home as a paper session leaves it: database with a kill-switch engage/reset history."""
    home = tmp / "state"
    env = dict(os.environ, QTS_HOME=str(home), PYTHONPATH=str(ROOT / "lib"))
    qts = [sys.executable, "-c", "import sys; sys.argv[0]='qts'; from qts.cli import main; main()"]
    subprocess.run(qts + ["db", "migrate"], env=env, capture_output=True, check=True, timeout=120)
    (home / "logs" / "circuit_breaker.json").write_text(
        json.dumps({"state": "closed", "trading_state": "ACTIVE", "reason": "bench", "since_ts": 1}) + "\n")
    return home


def main() -> int:
    runs = max(30, int(sys.argv[1])) if len(sys.argv) > 1 else 40
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp))
        env = {k: v for k, v in os.environ.items() if k not in ("PAPER_TRADING", "CLAUDE_PROJECT_DIR")}
        env.update(QTS_HOME=str(home), CLAUDE_PLUGIN_ROOT=str(ROOT), TMPDIR=tmp)
        cases = {
            "baseline: python3 -c pass": ([PY, "-c", "pass"], None),
            "PreToolUse, ordinary command": ([PY, "-S", str(HOOK), "pre_tool_use"], payload("ls -la")),
            "PreToolUse, trade command": ([PY, "-S", str(HOOK), "pre_tool_use"],
                                          payload("qts order buy BTC/USDT 0.01")),
        }
        if PATH_PY != PY:  # what a hook pays here on top, through the PATH's shim (not part of the targets)
            cases["via PATH shim: PreToolUse, ordinary"] = ([PATH_PY, "-S", str(HOOK), "pre_tool_use"],
                                                            payload("ls -la"))
        # warm the page cache and .pyc files, and check the answers are what they should be
        for name, (args, data) in cases.items():
            for _ in range(3):
                _, out = timed(args, data, env)
            if "PreToolUse" in name:
                assert out == b"", f"{name}: expected no output, got {out[:200]!r}"
        times: dict[str, list[float]] = {n: [] for n in cases}
        for _ in range(runs):
            for name, (args, data) in cases.items():
                times[name].append(timed(args, data, env)[0])

    base50 = pct(times["baseline: python3 -c pass"], 0.5)
    print(f"hooks: whole-process latency, {runs} runs each, {PY} ({sys.platform}, {os.cpu_count()} cpus)"
          + (f"; `python3` on PATH is {PATH_PY}" if PATH_PY != PY else ""))
    ok = True
    for name, xs in times.items():
        p50, p95 = pct(xs, 0.5), pct(xs, 0.95)
        note = ""
        if name == "PreToolUse, ordinary command":
            good = p50 <= 2.5 * base50 and p95 < 100
            ok &= good
            note = f"target p50 <= 2.5x baseline and p95 < 100 ms: {'ok' if good else 'MISSED'}"
        elif name == "PreToolUse, trade command":
            good = p50 < 300
            ok &= good
            note = f"target p50 < 300 ms: {'ok' if good else 'MISSED'}"
        row(name, f"p50 {p50:6.1f} ms", f"p95 {p95:6.1f} ms  x{p50 / base50:4.2f} of baseline  {note}")
    ok &= hostile_commands(env_for_budget())
    ok &= prompt_guard(max(20, runs // 2))
    return 0 if ok else 1


def env_for_budget() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PAPER_TRADING", "CLAUDE_PROJECT_DIR")}
    env.update(CLAUDE_PLUGIN_ROOT=str(ROOT))
    return env


OLD_COMMIT = "63bd4ae"   # the last commit with the regex-only classify


def old_classify():
    """The old classify module, loaded from git (None when git or the commit is not available)."""
    import types

    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:lib/qts/hooks/classify.py"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mod = types.ModuleType("old_classify")
    sys.modules["old_classify"] = mod   # dataclasses look their module up there
    exec(compile(src, "old_classify.py", "exec"), mod.__dict__)
    return mod


def hostile_commands(env: dict) -> bool:
    from qts.hooks import classify

    old = old_classify()
    print("\nhooks: PreToolUse on hostile commands (whole process; old classify in-process on 5 KB)")
    ok = True
    hook = [PY, "-S", str(HOOK), "pre_tool_use"]
    for unit in ("python3 -m qts ", ">", "qts --home x "):
        for size in (1_000_000, 99_000):
            cmd = (unit * (size // len(unit) + 1))[:size]
            xs = []
            for _ in range(5):
                ms, out = timed(hook, payload(cmd), env)
                xs.append(ms)
            verdict = json.loads(out)["hookSpecificOutput"]["permissionDecisionReason"][:60] if out else "no opinion"
            worst = max(xs)
            note = ""
            if size == 1_000_000:
                good = worst < 1000
                ok &= good
                note = f"target < 1 s: {'ok' if good else 'MISSED'}"
            row(f"{unit.strip() or unit!r} x {size:,} chars", f"max {worst:7.1f} ms", f"{note}  ({verdict})")
        small = (unit * (5000 // len(unit) + 1))[:5000]
        t0 = time.perf_counter()
        classify.classify_command(small, "/opt/plugin", "/tmp")
        new_ms = (time.perf_counter() - t0) * 1000
        if old is not None:
            t0 = time.perf_counter()
            old.classify_command(small, "/opt/plugin")
            old_ms = (time.perf_counter() - t0) * 1000
            row(f"  in-process, 5 KB: old vs new", f"{old_ms:8.1f} ms", f"new {new_ms:6.1f} ms, x{old_ms / max(new_ms, 1e-3):,.0f}")
    return ok


def _prompt(words: int = 300, numbers: int = 20) -> str:
    nums = ["65000", "0.01", "2024-05-01", "63,500.50", "1.5%", "3x", "14:30", "-2.4%", "10", "1e-3"]
    text = ("please review the last session and tell me whether the breaker tripped too often and what the "
            "stop losses cost us compared with holding ").split()
    out = [text[i % len(text)] for i in range(words - numbers)]
    for i in range(numbers):
        out.insert((i * 13) % len(out), nums[i % len(nums)])
    return " ".join(out)


def prompt_guard(runs: int) -> bool:
    """The prompt PIN guard with a PIN set at the real scrypt cost, as the hook process Claude Code runs."""
    from qts.paths import StateHome
    from qts.safety import pin

    print(f"\nhooks: UserPromptSubmit with a PIN set (scrypt N=2**17), {runs} runs")
    with tempfile.TemporaryDirectory() as tmp:
        home = StateHome(Path(tmp) / "state")
        env = env_for_budget()
        env.update(QTS_HOME=str(home.root), XDG_CONFIG_HOME=str(Path(tmp) / "config"), TMPDIR=tmp)
        saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME",)}
        os.environ["XDG_CONFIG_HOME"] = env["XDG_CONFIG_HOME"]
        try:
            pin.set_pin(home, "k7Qx93vB-harbor")
            hook = [PY, "-S", str(HOOK), "user_prompt_submit"]

            def data(text):
                return json.dumps({"session_id": "bench", "hook_event_name": "UserPromptSubmit", "prompt": text}).encode()

            numbers = data(_prompt())
            one_word = data(_prompt() + " and rerun it with build7-x")
            for _ in range(2):
                timed(hook, numbers, env)
            xs = [timed(hook, numbers, env)[0] for _ in range(runs)]
            one = [timed(hook, one_word, env)[0] for _ in range(3)]
            rec = json.loads(pin.pin_path(home).read_text())
            legacy = pin._build_record("482193", pin.SigningKey.generate(), pin.DEFAULT_SCRYPT_N, "created", rec["created_ts"])
            del legacy["pin_rules"]
            pin.pin_path(home).write_text(json.dumps(legacy))
            old = [timed(hook, numbers, env)[0] for _ in range(3)]
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    p50, p95 = pct(xs, 0.5), pct(xs, 0.95)
    good = p95 < 200
    row("300 words, 20 number-like, rule-2 PIN", f"p50 {p50:6.1f} ms", f"p95 {p95:6.1f} ms  target p95 < 200 ms: "
                                                                      f"{'ok' if good else 'MISSED'}")
    row("same prompt, legacy record (old check)", f"p50 {pct(old, 0.5):6.1f} ms",
        f"x{pct(old, 0.5) / p50:4.1f} the new p50 (four full scrypts)")
    row("+ one PIN-like word (one scrypt)", f"p50 {pct(one, 0.5):6.1f} ms", "")
    return good


if __name__ == "__main__":
    sys.exit(main())
