"""Claude Code's sandbox settings for live trading: the check, the writer, the `confine` command, the
SessionStart warnings (as a REAL hook subprocess) and `scripts/setup.sh --confine`.

Every test runs on real files in tmp folders, with HOME, the XDG folders and the project pointed there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
from qts.agent import confinement  # noqa: E402
from qts.agent.paths import AgentPaths, config_root, state_root  # noqa: E402
from qts.agent.secrets_check import visible_secrets  # noqa: E402

HOOK = REPO / "hooks" / "_hook.py"
PYTHON3 = shutil.which("python3") or sys.executable
SECRET = "s3cr3t-VALUE-9f8e7d"  # must never appear in any output
SCRUB_PREFIXES = ("CLAUDE", "XDG_", "QTS_", "EXCHANGE", "BINANCE", "KRAKEN", "OKX")
SCRUB = {"PAPER_TRADING", "PYTHONPATH", "HOME"}


def scrubbed() -> dict:
    """The test process's environment without anything that could look like a secret or move a folder."""
    out = {}
    for k, v in os.environ.items():
        if k in SCRUB or k.startswith(SCRUB_PREFIXES):
            continue
        if k.upper().endswith(("_API_KEY", "_SECRET", "_API_SECRET", "_SECRET_KEY", "_PRIVATE_KEY")) \
                or "PASSPHRASE" in k.upper():
            continue
        out[k] = v
    return out


@pytest.fixture
def world(tmp_path):
    home = tmp_path / "home"
    project = tmp_path / "proj"
    home.mkdir()
    project.mkdir()
    env = scrubbed()
    env.update(HOME=str(home), XDG_STATE_HOME=str(tmp_path / "xdg-state"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    # XDG_CONFIG_HOME unset: the key store is under ~/.config, so ~/ forms are exercised too
    state = project / ".quant-trading"
    paths = AgentPaths.for_home(state, env)
    return {"tmp": tmp_path, "home": home, "project": project, "env": env, "paths": paths, "state": state}


def settings_file(w, name="settings.json") -> Path:
    return w["project"] / ".claude" / name


def put(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2))
    return path


def check(w):
    return confinement.check(w["project"], w["paths"], w["env"])


def required(w) -> dict:
    return confinement.required_settings(w["paths"], w["env"])


# -- the required fragment -----------------------------------------------------------------------------------

def test_required_fragment_names_the_agent_folders(world):
    req = required(world)
    keys = config_root(world["env"]) / "keys"
    assert keys == world["paths"].keystore.parent and str(keys).startswith(str(world["home"]))
    assert req["sandbox"] == {"enabled": True, "failIfUnavailable": True, "allowUnsandboxedCommands": False,
                              "filesystem": {"denyRead": [f"/{keys}", f"/{world['paths'].runtime}"]}}
    deny = req["permissions"]["deny"]
    for tool in ("Read", "Edit", "Write"):
        assert f"{tool}(/{keys}/**)" in deny
        assert f"{tool}(/{world['paths'].runtime}/**)" in deny
    agent = world["paths"].state.parent
    anchor = state_root(world["env"])
    for tool in ("Edit", "Write"):
        assert f"{tool}(/{agent}/**)" in deny and f"{tool}(/{anchor}/**)" in deny
        for rc in (".bashrc", ".zshrc", ".profile", ".bash_profile", ".zprofile", ".config/fish/config.fish"):
            assert f"{tool}(/{world['home'] / rc})" in deny
    # the agent's state stays readable (qts agent status works from inside the sandbox)
    assert not any(r.startswith("Read(") and str(agent) in r for r in deny)
    assert all(r.split("(", 1)[1].startswith("//") for r in deny)  # two slashes: absolute paths
    assert len(deny) == len(set(deny))


# -- check ---------------------------------------------------------------------------------------------------

def test_empty_project_is_not_confined_and_each_missing_item_is_named(world):
    rep = check(world)
    assert rep.ok is False and rep.files == [] and rep.problems == []
    text = "\n".join(rep.missing)
    assert "sandbox.enabled is not true" in text
    assert "sandbox.failIfUnavailable is not true" in text
    assert "sandbox.allowUnsandboxedCommands is not false" in text
    req = required(world)
    for entry in req["sandbox"]["filesystem"]["denyRead"]:
        assert f"sandbox.filesystem.denyRead lacks {entry}" in text
    for rule in req["permissions"]["deny"]:
        assert f"permissions.deny lacks {rule}" in text, rule
    assert len(rep.missing) == 3 + 2 + len(req["permissions"]["deny"])


def test_write_then_check_is_ok(world):
    changes = confinement.write(world["project"], world["paths"], world["env"])
    assert any("sandbox.enabled" in c for c in changes) and any("permissions.deny +=" in c for c in changes)
    data = json.loads(settings_file(world).read_text())
    assert data == required(world)
    rep = check(world)
    assert rep.ok, rep
    assert rep.missing == [] and rep.problems == [] and rep.files == [str(settings_file(world))]
    keys = world["paths"].keystore.parent  # created, private, so the sandbox has a folder to hide
    assert keys.is_dir() and (keys.stat().st_mode & 0o777) == 0o700
    assert not list(settings_file(world).parent.glob("*.tmp"))  # no temp file left behind


def test_write_is_idempotent_and_keeps_unrelated_keys_and_rules(world):
    existing = {"model": "opus", "env": {"FOO": "bar"},
                "permissions": {"allow": ["Bash(ls:*)"],
                                "deny": ["Bash(curl:*)", required(world)["permissions"]["deny"][0]]},
                "sandbox": {"network": {"allowedDomains": ["api.binance.com"]}, "filesystem": {"denyRead": ["~/.ssh"]}}}
    put(settings_file(world), existing)
    first = confinement.write(world["project"], world["paths"], world["env"])
    assert first
    data = json.loads(settings_file(world).read_text())
    assert data["model"] == "opus" and data["env"] == {"FOO": "bar"}
    assert data["permissions"]["allow"] == ["Bash(ls:*)"]
    assert data["sandbox"]["network"] == {"allowedDomains": ["api.binance.com"]}
    deny = data["permissions"]["deny"]
    assert deny[:2] == existing["permissions"]["deny"] and len(deny) == len(set(deny))
    assert set(required(world)["permissions"]["deny"]) <= set(deny)
    assert data["sandbox"]["filesystem"]["denyRead"][0] == "~/.ssh"
    assert check(world).ok
    before = settings_file(world).read_bytes()
    mtime = settings_file(world).stat().st_mtime_ns
    time.sleep(0.01)
    assert confinement.write(world["project"], world["paths"], world["env"]) == []
    assert settings_file(world).read_bytes() == before and settings_file(world).stat().st_mtime_ns == mtime


def test_write_fixes_a_wrong_value_in_the_project_file(world):
    put(settings_file(world), {"sandbox": {"enabled": False, "allowUnsandboxedCommands": True}})
    changes = confinement.write(world["project"], world["paths"], world["env"])
    assert "sandbox.enabled: false -> true" in changes and "sandbox.allowUnsandboxedCommands: true -> false" in changes
    assert check(world).ok


def test_a_local_file_can_switch_it_off_and_precedence_is_respected(world):
    confinement.write(world["project"], world["paths"], world["env"])
    local = put(settings_file(world, "settings.local.json"), {"sandbox": {"enabled": False}})
    rep = check(world)
    assert not rep.ok
    assert rep.missing == ["sandbox.enabled is not true (false in .claude/settings.local.json)"]
    assert str(local) in rep.files
    local.unlink()
    # the user file is the LOWEST: a project value wins over it
    user = put(world["home"] / ".claude" / "settings.json", {"sandbox": {"enabled": False,
                                                                         "allowUnsandboxedCommands": True}})
    assert check(world).ok
    # ... but what the project leaves unset comes from the user file
    data = json.loads(settings_file(world).read_text())
    del data["sandbox"]["allowUnsandboxedCommands"]
    put(settings_file(world), data)
    rep = check(world)
    assert rep.missing == ["sandbox.allowUnsandboxedCommands is not false (true in ~/.claude/settings.json)"]
    assert str(user) in rep.files
    # a string "true" is not true
    put(user, {"sandbox": {"allowUnsandboxedCommands": "false"}})
    assert not check(world).ok


def test_lists_are_unions_across_files(world):
    """denyRead in the user file and deny rules in the local file count together."""
    req = required(world)
    put(world["home"] / ".claude" / "settings.json", {"sandbox": {"filesystem": req["sandbox"]["filesystem"]}})
    put(settings_file(world), {"sandbox": {k: v for k, v in req["sandbox"].items() if k != "filesystem"}})
    put(settings_file(world, "settings.local.json"), {"permissions": req["permissions"]})
    rep = check(world)
    assert rep.ok, rep
    assert len(rep.files) == 3


def test_invalid_json_is_a_problem_and_write_refuses_to_overwrite_it(world):
    bad = put(settings_file(world), '{"sandbox": {"enabled": true,, }')
    rep = check(world)
    assert not rep.ok
    assert len(rep.problems) == 1 and ".claude/settings.json is not valid JSON" in rep.problems[0]
    with pytest.raises(ValueError, match=str(bad)):
        confinement.write(world["project"], world["paths"], world["env"])
    assert bad.read_text() == '{"sandbox": {"enabled": true,, }'
    # a damaged USER file also means not confined, even when the project file is complete
    bad.unlink()
    confinement.write(world["project"], world["paths"], world["env"])
    assert check(world).ok
    put(world["home"] / ".claude" / "settings.json", "[1, 2")
    rep = check(world)
    assert not rep.ok and rep.missing == [] and "~/.claude/settings.json is not valid JSON" in rep.problems[0]
    put(world["home"] / ".claude" / "settings.json", "[1, 2]")  # valid JSON, not an object
    assert "not a JSON object" in check(world).problems[0]


def test_wrong_shapes_are_problems_and_write_does_not_clobber_them(world):
    put(settings_file(world), {"sandbox": True, "permissions": {"deny": "Read(//x/**)"}})
    rep = check(world)
    assert not rep.ok and any("sandbox in .claude/settings.json is not a JSON object" in p for p in rep.problems)
    assert any("permissions.deny in .claude/settings.json is not a JSON list" in p for p in rep.problems)
    with pytest.raises(ValueError, match="not a JSON"):
        confinement.write(world["project"], world["paths"], world["env"])
    assert json.loads(settings_file(world).read_text())["sandbox"] is True


def test_a_fifo_or_folder_in_place_of_a_settings_file_does_not_hang_the_check(world):
    path = settings_file(world)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    t0 = time.monotonic()
    rep = check(world)
    assert time.monotonic() - t0 < 5
    assert not rep.ok and "unreadable" in rep.problems[0]
    path.unlink()
    path.mkdir()
    assert not check(world).ok and check(world).problems


def test_a_parent_folder_rule_covers_the_child(world):
    """Read(//<config>/quant-trading-system/**) covers the keys folder; a sibling or a bare folder does not."""
    confinement.write(world["project"], world["paths"], world["env"])
    data = json.loads(settings_file(world).read_text())
    keys = world["paths"].keystore.parent
    parent = keys.parent  # ~/.config/quant-trading-system
    deny = [r for r in data["permissions"]["deny"] if f"/{keys}/" not in r]
    data["permissions"]["deny"] = deny + [f"{t}(/{parent}/**)" for t in ("Read", "Edit", "Write")]
    data["sandbox"]["filesystem"]["denyRead"] = ["~/.config/quant-trading-system",
                                                 f"/{world['paths'].runtime}"]
    put(settings_file(world), data)
    assert check(world).ok, check(world)
    # a glob parent covers it too
    data["permissions"]["deny"] = deny + [f"{t}(//{world['home'].as_posix().lstrip('/')}/.config/*/keys/**)"
                                          for t in ("Read", "Edit", "Write")]
    put(settings_file(world), data)
    assert check(world).ok, check(world)
    # a sibling folder does not; nor does the bare folder without /** (conservative)
    data["permissions"]["deny"] = deny + [f"Read(/{parent}/other/**)", f"Edit(/{keys})", f"Write(/{keys}/**)"]
    put(settings_file(world), data)
    missing = check(world).missing
    assert missing == [f"permissions.deny lacks Read(/{keys}/**) (the key store)",
                       f"permissions.deny lacks Edit(/{keys}/**) (the key store)"]
    # a denyRead glob is not counted (the sandbox expands it to the files that exist when a command starts)
    data["permissions"]["deny"] = deny + [f"{t}(/{parent}/**)" for t in ("Read", "Edit", "Write")]
    data["sandbox"]["filesystem"]["denyRead"] = [f"/{keys}/**", f"/{world['paths'].runtime}"]
    put(settings_file(world), data)
    assert check(world).missing == [f"sandbox.filesystem.denyRead lacks /{keys} (the key store)"]
    # the bare tool name denies every use of the tool
    data["sandbox"]["filesystem"]["denyRead"] = [str(parent), f"/{world['paths'].runtime}"]  # "/abs": absolute
    data["permissions"]["deny"] = ["Read", "Edit", "Write"]
    put(settings_file(world), data)
    assert check(world).ok, check(world)


def test_what_would_undo_the_sandbox_is_reported(world):
    confinement.write(world["project"], world["paths"], world["env"])
    keys = world["paths"].keystore.parent
    cases = [({"sandbox": {"excludedCommands": ["docker"]}}, "sandbox.excludedCommands is not empty (docker"),
             ({"sandbox": {"filesystem": {"allowRead": [f"/{keys}/abc"]}}}, "re-opens the key store"),
             ({"sandbox": {"filesystem": {"allowWrite": ["~/"]}}}, "sandbox.filesystem.allowWrite entry '~/'"),
             ({"permissions": {"additionalDirectories": [str(state_root(world["env"]).parent)]}},
              "permissions.additionalDirectories entry"),
             ({"sandbox": {"filesystem": {"disabled": True}}}, "sandbox.filesystem.disabled is true"),
             ({"sandbox": {"enableWeakerNestedSandbox": True}}, "sandbox.enableWeakerNestedSandbox is true")]
    local = settings_file(world, "settings.local.json")
    for extra, words in cases:
        put(local, extra)
        rep = check(world)
        assert not rep.ok and any(words in m for m in rep.missing), (extra, rep.missing)
    put(local, {"sandbox": {"filesystem": {"allowRead": ["~/.cache"], "allowWrite": ["/tmp/build"]}}})
    assert check(world).ok, check(world)


def test_a_project_holding_the_home_folder_is_not_confined(world):
    w = dict(world, project=world["home"])
    confinement.write(w["project"], w["paths"], w["env"])
    rep = confinement.check(w["project"], w["paths"], w["env"])
    assert not rep.ok and any("the project folder" in m and "contains" in m for m in rep.missing)


def test_check_never_raises(world):
    rep = confinement.check(world["project"], None, world["env"])  # type: ignore[arg-type]
    assert rep.ok is False and "could not run" in rep.problems[0]


# -- the command ---------------------------------------------------------------------------------------------

def test_cli_main_exit_codes(world, monkeypatch, capsys):
    for k in [k for k in os.environ if k not in world["env"]]:
        monkeypatch.delenv(k, raising=False)
    for k, v in world["env"].items():
        monkeypatch.setenv(k, v)
    proj = str(world["project"])
    assert confinement.cli_main(["--bogus"]) == 2
    assert "unknown argument" in capsys.readouterr().err
    assert confinement.cli_main(["--project"]) == 2
    assert confinement.cli_main(["--project", str(world["tmp"] / "nope")]) == 2
    capsys.readouterr()
    assert confinement.cli_main(["--project", proj]) == 1
    out = capsys.readouterr().out
    assert "NOT CONFINED" in out and "sandbox.enabled is not true" in out and "qts agent confine --write" in out
    assert not settings_file(world).exists()
    assert confinement.cli_main(["--project", proj, "--write"]) == 0
    out = capsys.readouterr().out
    assert "CONFINED" in out and "NOT CONFINED" not in out and "+ sandbox.enabled" in out
    assert confinement.cli_main(["--project", proj, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is True and rep["missing"] == [] and rep["files"] == [str(settings_file(world))]
    put(settings_file(world, "settings.local.json"), "{oops")
    assert confinement.cli_main(["--project", proj, "--write"]) == 1
    assert "settings.local.json is not valid JSON" in capsys.readouterr().out
    put(settings_file(world), "{oops")
    assert confinement.cli_main(["--project", proj, "--write"]) == 1
    assert "NOT written" in capsys.readouterr().out and settings_file(world).read_text() == "{oops"
    assert confinement.cli_main(["--help"]) == 0 and "usage: confine" in capsys.readouterr().out


def test_confine_through_the_hook_script(world):
    """`python3 -S hooks/_hook.py confine ...`: what setup.sh runs, standard library only."""
    env = dict(world["env"])
    def run(*a):
        return subprocess.run([PYTHON3, "-S", str(HOOK), "confine", *a], capture_output=True, text=True, env=env,
                              timeout=60, cwd=world["project"])

    p = run("--project", str(world["project"]))
    assert p.returncode == 1 and "NOT CONFINED" in p.stdout and "Traceback" not in p.stderr
    p = run("--nope")
    assert p.returncode == 2 and "unknown argument" in p.stderr
    p = run("--write", "--project", str(world["project"]), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["ok"] is True
    env["CLAUDE_PROJECT_DIR"] = str(world["project"])  # the default project
    assert run().returncode == 0


# -- visible secrets -----------------------------------------------------------------------------------------

def test_visible_secrets_names_places_never_values(world):
    env = {"EXCHANGE_SECRET": SECRET, "BINANCE_API_KEY": SECRET, "OKX_PASSPHRASE": SECRET, "EXCHANGE_API_KEY": "",
           "ANTHROPIC_API_KEY": SECRET, "OPENAI_API_KEY": SECRET, "GITHUB_CLIENT_SECRET": SECRET, "HOME": "/x"}
    put(world["project"] / ".env", f"# keys\nexport KRAKEN_API_SECRET=\"{SECRET}\"\n"
                                   "EXCHANGE_SECRET=${EXCHANGE_SECRET}\nSYMBOLS=BTC/USDT\nnot a line\n")
    put(world["state"] / ".env", f"PAPER_TRADING=true\nEXCHANGE_API_KEY='{SECRET}'\nBYBIT_SECRET=\n")
    found = visible_secrets(env, world["project"], world["state"])
    assert found == ["environment variable BINANCE_API_KEY", "environment variable EXCHANGE_SECRET",
                     "environment variable OKX_PASSPHRASE", f"{world['project'] / '.env'}: KRAKEN_API_SECRET",
                     f"{world['state'] / '.env'}: EXCHANGE_API_KEY"]
    assert SECRET not in json.dumps(found)
    assert visible_secrets({}, world["tmp"] / "none", None) == []


def test_visible_secrets_is_bounded(world):
    """Only the first 256 KB of a .env is read, and a FIFO planted as .env never blocks."""
    put(world["project"] / ".env", "# padding\n" * 30_000 + f"EXCHANGE_SECRET={SECRET}\n")
    assert (world["project"] / ".env").stat().st_size > 256 * 1024
    assert visible_secrets({}, world["project"], None) == []
    (world["project"] / ".env").unlink()
    put(world["project"] / ".env", f"EXCHANGE_SECRET={SECRET}\n" + "# padding\n" * 30_000)
    assert visible_secrets({}, world["project"], None) == [f"{world['project'] / '.env'}: EXCHANGE_SECRET"]
    world["state"].mkdir()
    os.mkfifo(world["state"] / ".env")
    t0 = time.monotonic()
    assert visible_secrets({}, None, world["state"]) == []
    assert time.monotonic() - t0 < 5


# -- SessionStart, as the real hook subprocess ---------------------------------------------------------------

SESSION_START = {"session_id": "5c7c9720-0b76-426f-b187-af2f6e526d92",
                 "transcript_path": "/tmp/claudehome/.claude/projects/-tmp-proj/5c7c9720.jsonl",
                 "cwd": "/tmp/proj", "hook_event_name": "SessionStart", "source": "startup"}


def session_start(w, **extra) -> tuple[dict, str, str]:
    env = dict(w["env"], CLAUDE_PROJECT_DIR=str(w["project"]), CLAUDE_PLUGIN_ROOT=str(REPO))
    env.update({k: str(v) for k, v in extra.items()})
    p = subprocess.run([PYTHON3, "-S", str(HOOK), "session_start"], input=json.dumps(SESSION_START).encode(),
                       capture_output=True, env=env, timeout=60, cwd=w["project"])
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0 and "Traceback" not in err, err
    obj = json.loads(out)
    hso = obj["hookSpecificOutput"]
    assert hso["hookEventName"] == "SessionStart" and "kill switch clear" in hso["additionalContext"]  # kept
    return obj, out, err


def test_session_start_is_quiet_in_paper_mode(world):
    obj, _, _ = session_start(world)
    assert "systemMessage" not in obj
    assert "confine" not in obj["hookSpecificOutput"]["additionalContext"]


@pytest.mark.parametrize("how", ["env", "dotenv", "agent_state"])
def test_session_start_warns_when_live_is_configured_but_not_confined(world, how):
    extra = {}
    if how == "env":
        extra["PAPER_TRADING"] = "false"
    elif how == "dotenv":
        put(world["state"] / ".env", "PAPER_TRADING=false\n")
    else:
        world["paths"].state.mkdir(parents=True)
    obj, _, _ = session_start(world, **extra)
    ctx = obj["hookSpecificOutput"]["additionalContext"]
    assert "live trading is configured" in ctx and "sandbox.enabled is not true" in ctx
    assert "qts agent confine --write" in ctx and "/quant-trading-system:setup" in ctx
    assert "PIN-signed acknowledgement" in ctx
    assert "NOT confined" in obj["systemMessage"] and "qts agent confine --write" in obj["systemMessage"]
    # once the settings are written, the warning is gone
    confinement.write(world["project"], world["paths"], world["env"])
    obj, _, _ = session_start(world, **extra)
    assert "systemMessage" not in obj and "confine" not in obj["hookSpecificOutput"]["additionalContext"]
    # and a local file switching the sandbox off brings it back, naming that file
    put(settings_file(world, "settings.local.json"), {"sandbox": {"enabled": False}})
    obj, _, _ = session_start(world, **extra)
    assert "false in .claude/settings.local.json" in obj["hookSpecificOutput"]["additionalContext"]


def test_session_start_warns_about_visible_secrets_without_their_values(world):
    put(world["state"] / ".env", f"EXCHANGE_SECRET={SECRET}\n")
    obj, out, err = session_start(world, EXCHANGE_SECRET=SECRET, ANTHROPIC_API_KEY=SECRET)
    ctx = obj["hookSpecificOutput"]["additionalContext"]
    for text in (ctx, obj["systemMessage"]):
        assert "environment variable EXCHANGE_SECRET" in text
        assert f"{world['state'] / '.env'}: EXCHANGE_SECRET" in text
        assert "qts agent import-keys" in text and "own terminal" in text
    assert "ANTHROPIC_API_KEY" not in out  # Claude Code's own key is not an exchange key
    assert SECRET not in out and SECRET not in err
    assert "live trading is configured" not in ctx  # paper: only the secrets warning


def test_session_start_with_broken_input_still_answers(world):
    env = dict(world["env"], CLAUDE_PLUGIN_ROOT=str(REPO), EXCHANGE_SECRET=SECRET, PAPER_TRADING="false")
    p = subprocess.run([PYTHON3, "-S", str(HOOK), "session_start"], input=b"\xff{not json", capture_output=True,
                       env=env, timeout=60, cwd=world["project"])  # no CLAUDE_PROJECT_DIR: the cwd is the project
    assert p.returncode == 0 and b"Traceback" not in p.stderr
    obj = json.loads(p.stdout)
    ctx = obj["hookSpecificOutput"]["additionalContext"]
    assert "environment variable EXCHANGE_SECRET" in ctx and "live trading is configured" in ctx
    assert SECRET.encode() not in p.stdout + p.stderr


# -- scripts/setup.sh ----------------------------------------------------------------------------------------

def fake_venv(venv: Path) -> Path:
    """A virtualenv that 'already holds this version' (as in tests/test_plugin_cli.py): setup.sh skips the
    install; its site-packages points at the test virtualenv's."""
    import site as site_mod

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "qts-test-deps.pth").write_text("\n".join(site_mod.getsitepackages()) + "\n")
    (venv / ".qts-installed").write_text(hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    return venv


def test_setup_sh_offers_and_with_confine_writes_the_settings(world):
    venv = fake_venv(world["tmp"] / "venv")
    args = [str(REPO / "scripts" / "setup.sh"), "--project", str(world["project"]), "--venv", str(venv), "--no-shim"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=world["env"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "NOT CONFINED" in p.stdout and "--confine" in p.stdout and "hooks/_hook.py confine --write" in p.stdout
    assert not settings_file(world).exists()  # offered, not written
    p = subprocess.run(args + ["--confine"], capture_output=True, text=True, timeout=180, env=world["env"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(settings_file(world).read_text()) == required(world)
    assert check(world).ok
    assert "confine the assistant as live trading requires" in p.stdout
    # a damaged settings file: --confine refuses to overwrite it and setup says so with a failing exit
    put(settings_file(world), "{damaged")
    p = subprocess.run(args + ["--confine"], capture_output=True, text=True, timeout=180, env=world["env"])
    assert p.returncode == 1 and "NOT complete" in p.stderr and "not valid JSON" in p.stdout
    assert settings_file(world).read_text() == "{damaged"
