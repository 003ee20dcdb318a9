"""What a plugin install carries: only the plugin's own files, never the virtualenv, run state or a .env.

Claude Code installs a plugin from a folder marketplace by copying the whole folder, files git ignores
included (checked below with the real CLI). `scripts/export_plugin.sh` (`make plugin`) writes the
tracked files to a folder outside the checkout, and that is what gets installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from claude_cli import find_claude, sealed_env  # noqa: E402

PLUGIN = "quant-trading-system"
JUNK = {".venv/bin/python3.12": "big", ".demo/db/metrics.db": "state", ".numba-cache/x.nbi": "cache",
        ".env": "EXCHANGE_SECRET=not-a-real-secret\n", ".quant-trading/safety/KILL_SWITCH": "{}"}


@pytest.fixture
def checkout(tmp_path):
    """A clone of this repository with what a developer's checkout accumulates (all ignored by git)."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("the repository is not a git checkout")
    clone = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for rel, text in JUNK.items():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_text(text)
    return clone


def export(clone: Path, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(clone / "scripts" / "export_plugin.sh"), str(dest)], capture_output=True, text=True,
                          timeout=60)


def test_export_holds_the_tracked_files_and_nothing_ignored(checkout, tmp_path):
    # an uncommitted edit of a tracked file is exported as it is in the working tree
    (checkout / "commands" / "setup.md").write_text((checkout / "commands" / "setup.md").read_text() + "\nedited\n")
    dest = tmp_path / "out" / "plugin"
    p = export(checkout, dest)
    assert p.returncode == 0, p.stderr
    tracked = subprocess.run(["git", "-C", str(checkout), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.split()
    exported = sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file())
    assert exported == sorted(tracked)
    for rel in JUNK:
        assert not (dest / rel).exists(), rel
    assert (dest / "commands" / "setup.md").read_text().endswith("edited\n")
    assert os.access(dest / "hooks" / "kill_switch.sh", os.X_OK)
    assert f"claude plugin marketplace add {dest}" in p.stdout


def test_export_replaces_an_old_export_and_refuses_a_folder_inside_the_checkout(checkout, tmp_path):
    dest = tmp_path / "plugin"
    (dest / "stale").mkdir(parents=True)
    (dest / "stale" / "old.py").write_text("from an older export")
    assert export(checkout, dest).returncode == 0
    assert not (dest / "stale").exists()
    inside = export(checkout, checkout / "dist")
    assert inside.returncode == 2 and "outside the checkout" in inside.stderr
    assert not (checkout / "dist").exists()


@pytest.fixture
def claude():
    binary = find_claude()
    if not binary:
        pytest.skip("the Claude Code CLI was not found (.ci/run installs it into .tools/claude)")
    return binary


def install(claude: str, source: Path, home: Path) -> Path:
    home.mkdir()
    env = sealed_env(home)
    for args in (["plugin", "marketplace", "add", str(source)], ["plugin", "install", f"{PLUGIN}@{PLUGIN}"]):
        p = subprocess.run([claude, *args], env=env, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stdout + p.stderr
    listed = subprocess.run([claude, "plugin", "list", "--json"], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    return Path(next(e for e in json.loads(listed.stdout) if e["id"] == f"{PLUGIN}@{PLUGIN}")["installPath"])


def test_installing_the_export_carries_no_virtualenv_state_or_secrets(claude, checkout, tmp_path):
    # the reason for the export: the CLI copies a checkout's ignored files into its cache
    raw = install(claude, checkout, tmp_path / "home-raw")
    assert (raw / ".venv").exists() and (raw / ".env").exists()
    dest = tmp_path / "plugin"
    assert export(checkout, dest).returncode == 0
    path = install(claude, dest, tmp_path / "home")
    assert (path / "hooks" / "hooks.json").is_file() and (path / "lib" / "qts" / "gate.py").is_file()
    for rel in JUNK:
        assert not (path / rel.split("/")[0]).exists(), rel
