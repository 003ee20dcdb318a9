"""Drive the real Claude Code CLI offline: find the binary, build a sealed environment, run a scripted
session against the fake Messages API, and read its stream-json output.

Nothing here reaches the network: the CLI's API calls go to the fake on 127.0.0.1, a throwaway HOME holds
its settings, a placeholder key is the only credential, and the "non-essential traffic" switches are on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_anthropic import FakeAnthropic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".tools" / "claude" / "node_modules" / ".bin" / "claude"
INSTALL_HINT = ("install it with: npm install --prefix .tools/claude @anthropic-ai/claude-code "
                "(.ci/run does this), or point QTS_CLAUDE_BIN at a claude binary")

# Variables of the developer's or CI's own environment that must not leak into the sealed CLI run.
LEAKY_PREFIXES = ("ANTHROPIC_", "CLAUDE", "AWS_", "GOOGLE_", "VERTEX", "OTEL_", "MCP_")
LEAKY = {"QTS_HOME", "QTS_PYTHON", "PAPER_TRADING", "EXCHANGE", "EXCHANGE_API_KEY", "EXCHANGE_SECRET", "SYMBOLS",
         "STRATEGY", "TRADE_INTERVAL", "MAX_POSITION_SIZE", "RISK_LIMIT_PERCENT", "INITIAL_CASH", "FEE_BPS",
         "SLIPPAGE_BPS", "PYTHONPATH", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AI_AGENT"}


def find_claude() -> str | None:
    for c in (os.environ.get("QTS_CLAUDE_BIN"), str(DEFAULT_BIN), shutil.which("claude")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def claude_version(binary: str) -> str:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    return p.stdout.strip()


def sealed_env(home: Path, base_url: str | None = None, **extra) -> dict:
    """The CLI's environment: throwaway HOME, placeholder key, fake API, the project venv's `qts` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY and not k.startswith(LEAKY_PREFIXES)}
    venv_bin = str(Path(sys.executable).parent)  # holds `qts` and the venv's python
    py3 = shutil.which("python3")
    path = [venv_bin] + ([str(Path(py3).parent)] if py3 else []) + ["/usr/local/bin", "/usr/bin", "/bin"]
    env.update({
        "HOME": str(home),
        "PATH": os.pathsep.join(dict.fromkeys(path)),
        "ANTHROPIC_API_KEY": "sk-ant-placeholder-not-a-real-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "QTS_PYTHON": sys.executable,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if base_url:
        env["ANTHROPIC_BASE_URL"] = base_url
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Session:
    proc: subprocess.CompletedProcess
    events: list[dict]
    fake: FakeAnthropic
    requests: list[dict] = field(default_factory=list)

    def explain(self) -> str:
        """Everything needed to see why a scenario did not go as expected."""
        lines = [f"exit {self.proc.returncode}; stderr: {self.proc.stderr[-1500:]}"]
        for e in self.events:
            if e.get("type") == "system" and e.get("subtype") == "hook_started":
                continue
            lines.append(json.dumps(e)[:600])
        return "\n".join(lines)

    def hooks(self, event: str | None = None) -> list[dict]:
        return [e for e in self.events if e.get("type") == "system" and e.get("subtype") == "hook_response"
                and (event is None or e.get("hook_event") == event)]

    def hook_outputs(self, event: str) -> list[dict]:
        out = []
        for e in self.hooks(event):
            try:
                out.append(json.loads(e.get("output") or e.get("stdout") or "null") or {})
            except ValueError:
                out.append({"unparseable": e.get("output")})
        return out

    def pre_decisions(self) -> list[str | None]:
        """One entry per PreToolUse hook run: 'deny', 'ask', 'allow', or None (no opinion)."""
        return [(o.get("hookSpecificOutput") or {}).get("permissionDecision") for o in self.hook_outputs("PreToolUse")]

    def tool_results(self) -> list[dict]:
        """Each tool_result the CLI fed back to the model, in order: {content, is_error}."""
        out = []
        for e in self.events:
            if e.get("type") != "user" or e.get("parent_tool_use_id"):
                continue
            content = (e.get("message") or {}).get("content")
            if isinstance(content, list):
                for b in content:
                    if isinstance(b, dict) and b.get("type") == "tool_result":
                        c = b.get("content")
                        if isinstance(c, list):
                            c = "\n".join(x.get("text", "") for x in c if isinstance(x, dict))
                        out.append({"content": c or "", "is_error": bool(b.get("is_error"))})
        return out

    def result(self) -> dict:
        res = [e for e in self.events if e.get("type") == "result"]
        return res[-1] if res else {}

    def init(self) -> dict:
        ini = [e for e in self.events if e.get("type") == "system" and e.get("subtype") == "init"]
        return ini[0] if ini else {}

    def model_saw(self, text: str) -> bool:
        """Did any request to the (fake) model contain ``text``?"""
        return any(text in json.dumps(r) for r in self.requests)


def run_session(binary: str, prompt: str, *, cwd: Path, home: Path, script: list, plugin_dirs=(REPO,),
                allowed_tools: tuple[str, ...] | None = ("Bash",), timeout: float = 150, subagents=None,
                extra_env: dict | None = None, extra_args: tuple[str, ...] = ()) -> Session:
    """One `claude -p` run against a fresh fake API that plays ``script``; time-bounded."""
    with FakeAnthropic(script, lifetime_s=timeout + 30, subagents=subagents) as fake:
        env = sealed_env(home, fake.base_url, **(extra_env or {}))
        args = [binary, "-p", prompt, "--output-format", "stream-json", "--verbose", "--include-hook-events"]
        for d in plugin_dirs:
            args += ["--plugin-dir", str(d)]
        if allowed_tools:
            args += ["--allowedTools", ",".join(allowed_tools)]
        args += list(extra_args)
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        with fake.lock:
            requests = list(fake.requests)
    events = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return Session(proc, events, fake, requests)


PLUGIN_PARTS = (".claude-plugin", "commands", "agents", "hooks", "workflows", "scripts", "db", "lib",
                "pyproject.toml", "README.md")


def plugin_copy(dest: Path) -> Path:
    """The files a user gets from the repository (no .venv, .tools, caches): installing from the working tree
    itself would make Claude Code copy the virtualenv and the CLI (gigabytes) into its plugin cache."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".venv", ".tools")
    for part in PLUGIN_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest
