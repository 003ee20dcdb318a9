"""Red team: attacks on live trading by the SAME user as the trading agent, against a real agent process.

The attacker is the assistant as DESIGN.md's threat model has it: it runs commands as the human's own
(unprivileged) user, knows this code and imports it, can delete or roll back any file that user can, and
runs several processes at once. The agent is a real `qts agent start` in a pseudo-terminal (the human's
terminal: the test types the PIN there), trading against the standalone loopback Binance in its own
process, through the real ccxt client.

These run UNCONFINED (no Claude Code sandbox): every claim here holds without it. What only the sandbox
adds (no reading of the key store, no socket, no host terminals) is in test_redteam_sandbox.py.

Every test ends with the same three checks: no live order beyond the human's grant, no secret in any
output or file, and the books equal to the exchange.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import agent_support as A

USER = A.test_user()
pytestmark = pytest.mark.skipif(isinstance(USER, str), reason=USER if isinstance(USER, str) else "")

MAX_ORDER, MAX_DAILY = 500.0, 2000.0


@pytest.fixture
def world():
    with A.World(USER[0], USER[1]) as w:
        w.set_pin_and_keys()
        yield w


@pytest.fixture
def agent(world):
    a = world.start_agent("--no-loop", "--max-order", str(MAX_ORDER), "--max-daily", str(MAX_DAILY),
                          "--accept-unconfined")
    yield a
    a.stop()


def order(world, side, amount, coid, *extra) -> tuple[int, dict]:
    p = world.qts("order", side, "BTC/USDT", str(amount), "--client-order-id", coid, "--json", *extra)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"qts order printed no JSON (exit {p.returncode}): {p.stdout} {p.stderr}") from None


def entries(world) -> list[dict]:
    """The exchange's orders but the protective stops the agent rests after a fill (broker/protective.py)."""
    return [o for o in world.exchange_orders() if o["type"] != "STOP_LOSS_LIMIT"]


def protective_stops(world) -> list[dict]:
    return [o for o in world.exchange_orders() if o["type"] == "STOP_LOSS_LIMIT" and o["status"] == "NEW"]


def outputs_and_files(world, extra_texts=()) -> list[tuple[str, str]]:
    """Every text the attack and the agent produced, and every file the user owns in this world."""
    out = [(f"output {i}", t) for i, t in enumerate(extra_texts)]
    for a in world.agents:
        out.append(("agent terminal", a.output))
    for p in world.base.rglob("*"):
        if p.is_file() and "exchange" not in p.relative_to(world.base).parts[:1]:
            try:
                out.append((str(p), p.read_bytes().decode("utf-8", "replace")))
            except OSError:
                pass
    return out


def wait_for_event(world, text: str, timeout: float = 15) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in (world.agent_status() or {}).get("events", []):
            if text in e["message"]:
                return e
        time.sleep(0.1)
    raise AssertionError(f"the agent never reported {text!r}: {(world.agent_status() or {}).get('events')}")


def wait_for_books(world, quiet_s: float = 2.5, timeout: float = 30) -> None:
    """Until the agent has rebuilt its books after the LAST deletion: a rebuild seen, then no new one for
    ``quiet_s`` (an attacker deleting in a loop can delete a rebuilt database again)."""
    deadline = time.time() + timeout
    seen, since = None, time.time()
    while time.time() < deadline:
        n = sum(1 for e in (world.agent_status() or {}).get("events", []) if "live books rebuilt" in e["message"])
        if n != seen:
            seen, since = n, time.time()
        elif n and time.time() - since >= quiet_s and (world.state_home / "db" / "metrics.db").exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"the agent did not settle its books: {(world.agent_status() or {}).get('events')}")


def assert_the_three_checks(world, texts=()):
    # 1. no live order beyond the human's grant
    per_order = {}
    for s in world.symbols:
        for t in world.server.trades(s):
            if t.get("isBuyer"):
                per_order[t["orderId"]] = per_order.get(t["orderId"], 0.0) + float(t["qty"]) * float(t["price"])
    assert all(v <= MAX_ORDER + 1e-6 for v in per_order.values()), per_order
    assert sum(per_order.values()) <= MAX_DAILY + 1e-6, per_order
    # 2. no secret anywhere the attacker could look
    for where, text in outputs_and_files(world, texts):
        assert world.server.secret not in text, f"the exchange secret is in {where}"
        assert A.PIN not in text, f"the PIN is in {where}"
    # 3. the books equal the exchange
    assert A.books_disagree(world) == []


# -- 1. replace or roll back any file, or the whole state home ---------------------------------------------

def test_deleting_or_rolling_back_the_whole_state_home_loosens_nothing(world, agent):
    snapshot = world.base / "attacker-copy"
    world.run(["cp", "-a", str(world.state_home), str(snapshot)])   # taken while ACTIVE, before the halt
    assert world.qts("agent", "halt", "--reason", "human halted").returncode == 0
    code, res = order(world, "buy", 0.001, "after-halt")
    assert code == 3 and res["reason_code"] == "TRADING_HALTED"

    # the attacker rolls the state home back to the ACTIVE copy, then deletes it altogether. The agent
    # re-creates its folders as it goes, so copying into the moved-away home's place can race it ("File
    # exists"): the attacker prepares the copy beside it and renames it into place, retrying until it sticks
    home, base = world.state_home, world.base
    attack = world.run(["sh", "-c", f"for i in 1 2 3 4 5 6 7 8; do "
                                    f"rm -rf {base}/rollback && cp -a {snapshot} {base}/rollback "
                                    f"&& rm -f {base}/rollback/safety/KILL_SWITCH "
                                    f"&& {{ mv -T {home} {base}/gone-$i 2>/dev/null; mv -T {base}/rollback {home}; }} "
                                    f"&& exit 0; done; exit 1"])
    assert attack.returncode == 0, attack.stderr
    assert not (home / "safety" / "KILL_SWITCH").exists()
    code, res = order(world, "buy", 0.001, "after-rollback")
    assert code == 3 and res["reason_code"] == "TRADING_HALTED", res
    # (the agent re-creates its spool folder as it goes: the attacker simply deletes until it sticks)
    world.run(["sh", "-c", f"for i in 1 2 3 4 5; do rm -rf {world.state_home} 2>/dev/null; done"])
    assert not (world.state_home / "db").exists()
    code, res = order(world, "buy", 0.001, "after-delete")
    assert code == 3 and res["reason_code"] == "TRADING_HALTED", res
    assert world.exchange_orders() == []
    st = world.agent_status()
    assert st["policy"]["trading_state"] == "HALTED"
    wait_for_books(world)  # the agent noticed its database went (each time), and rebuilt it
    assert_the_three_checks(world)


def test_a_replaced_pin_record_and_files_signed_with_it_change_nothing(world, agent):
    # the attacker replaces the key store's PIN record with its own (same user: it can, unconfined), then
    # uses the library's own functions to sign everything the old file-based design trusted
    forge = f"""
import json, time
from qts.paths import StateHome
from qts.safety import pin, grants, kill_switch
from qts.store import Store
from qts.agent import protocol, challenge
from qts.agent.paths import AgentPaths
home = StateHome({str(world.state_home)!r}).ensure()
pin.pin_path(home).unlink()
pin.set_pin(home, "attacker-pin-123", scrypt_n=1024)
key = pin.unlock(home, "attacker-pin-123")
now = int(time.time() * 1000)
grants.issue_live_grant(home, key, max_order_notional=1e6, max_daily_notional=1e7, symbols=["BTC/USDT"], now=now)
try:
    kill_switch.reset(home, Store.open(home), key)
except kill_switch.ResetRefused:
    pass  # a PIN key nobody has seen before: refused up front (its cool-down)
paths = AgentPaths.for_home(home.root)
out = {{}}
for action, params in (("grant", {{"max_order_usd": 1e6, "max_daily_usd": 1e7, "symbols": "BTC/USDT", "hours": 8}}),
                       ("limits", {{"order_approval_usd": 1e9}}), ("resume", {{}})):
    ch = protocol.call(paths, "challenge", {{"action": action, "params": params}})["data"]["challenge"]
    out[action] = protocol.call(paths, "loosen", challenge.sign(key, ch))
print(json.dumps(out))
"""
    p = world.python(forge)
    assert p.returncode == 0, p.stderr
    answers = json.loads(p.stdout)
    for action, ans in answers.items():
        assert ans["ok"] is False and "does not verify" in ans["message"], (action, ans)
    code, res = order(world, "buy", 0.05, "big-one")  # 0.05 BTC = 3,000 USD: above the human's 500
    assert code == 3 and res["reason_code"] == "LIVE_SCOPE", res
    assert world.agent_status()["policy"]["grant"]["max_order_usd"] == MAX_ORDER
    assert_the_three_checks(world, [p.stdout, p.stderr])


def test_a_signed_loosening_is_single_use_and_bound_to_this_agents_policy(world, agent):
    # the human approves once (PIN in their terminal); the attacker replays it, and re-uses a challenge
    code, out = world.in_terminal("agent", "approve", "limits", "collar_bps=300")
    assert code == 0 and "collar_bps=300" in out, out
    capture = f"""
import json
from qts.agent import protocol, challenge
from qts.agent.paths import AgentPaths
from qts.safety import pin
from qts.paths import StateHome
paths = AgentPaths.for_home({str(world.state_home)!r})
ch = protocol.call(paths, "challenge", {{"action": "limits", "params": {{"collar_bps": 2000}}}})["data"]["challenge"]
# a stale challenge: the policy changes (a tightening anyone may do) between issue and use
protocol.call(paths, "lower", {{"max_daily_loss_usd": 50}})
print(json.dumps(ch))
"""
    p = world.python(capture)
    assert p.returncode == 0, p.stderr
    ch = json.loads(p.stdout)
    # even signed by the REAL key (the human fooled into it), a challenge issued before a policy change fails
    sign = f"""
import json
from qts.agent import protocol, challenge
from qts.agent.paths import AgentPaths
from qts.safety import pin
from qts.paths import StateHome
home = StateHome({str(world.state_home)!r})
key = pin.unlock(home, {A.PIN!r})
paths = AgentPaths.for_home(home.root)
req = challenge.sign(key, {ch!r})
a = protocol.call(paths, "loosen", req)
b = protocol.call(paths, "loosen", req)
print(json.dumps([a, b]))
"""
    p2 = world.python(sign)
    a, b = json.loads(p2.stdout)
    assert not a["ok"] and "policy changed" in a["message"], a
    assert not b["ok"] and "unknown, expired or already used" in b["message"], b
    assert world.agent_status()["policy"]["collar_bps"] == 300, (world.agent_status()["events"], p.stdout, p2.stdout)
    assert_the_three_checks(world, [p.stdout, p2.stdout])


# -- 2. reading secrets ---------------------------------------------------------------------------------

def test_the_exchange_secret_cannot_be_read_through_any_tool(world, agent):
    pid = agent.pid
    tries = {
        "env": ["env"], "export": ["sh", "-c", "export -p"],
        "grep -r": ["grep", "-ra", world.server.secret[:12], str(world.base)],
        "cat environ": ["cat", f"/proc/{pid}/environ"], "cat cmdline": ["cat", f"/proc/{pid}/cmdline"],
        "awk": ["awk", "{print}", str(world.paths.exchange_keys)],
        "perl": ["perl", "-ne", "print", str(world.paths.exchange_keys)],
        "python /proc/mem": [A.PYTHON, "-c", f"""
import re
maps = open('/proc/{pid}/maps').read()
mem = open('/proc/{pid}/mem', 'rb')
for line in maps.splitlines():
    a, b = (int(x, 16) for x in line.split()[0].split('-'))
    mem.seek(a); print(mem.read(min(b - a, 1 << 20)))
"""],
        "ptrace attach": [A.PYTHON, "-c", f"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, {pid}, None, None)  # PTRACE_ATTACH
print('attached' if r == 0 else 'refused errno %d' % ctypes.get_errno())
"""],
    }
    texts = []
    for name, argv in tries.items():
        p = world.run(argv)
        texts += [p.stdout, p.stderr]
        assert world.server.secret not in p.stdout + p.stderr, name
        if name == "ptrace attach":
            assert "refused" in p.stdout, p.stdout
        if name in ("cat environ", "python /proc/mem"):
            assert p.returncode != 0, f"{name} should be refused for a non-dumpable agent: {p.stdout[:200]}"
    st = (Path(f"/proc/{pid}/status").read_text())
    assert "TracerPid:\t0" in st
    assert_the_three_checks(world, texts)


# -- 3. orders through ccxt or the library's brokers directly ------------------------------------------------

def test_orders_around_the_agent_reach_nothing(world, agent):
    attack = f"""
import json, sys, time
sys.path.insert(0, {str(A.REPO / 'tests')!r})
import ccxt
from qts.config import load_settings
from qts.store import Store
from qts.paths import StateHome
from qts.broker.live import LiveBroker
from qts.broker.models import OrderIntent
from qts.market.ccxt_feed import CcxtFeed
from qts.market.exchange_url import apply_exchange_url
from qts.gate import Gate
from qts.agent.authority import Authority
from qts.agent.exchange_view import ExchangeView
from qts.agent.policy import Policy, Grant
from qts.broker.exchange_client import ExchangeClient
out = {{}}
ex = ccxt.binance({{"enableRateLimit": False}})
ex.options["fetchMarkets"] = {{"types": ["spot"]}}; ex.options["fetchMargins"] = False; ex.has["fetchCurrencies"] = False
ex.options["fetchCurrencies"] = False
apply_exchange_url(ex, {world.server.base_url!r})
ex.load_markets()
try:
    ex.create_order("BTC/USDT", "market", "buy", 0.01)
    out["ccxt"] = "PLACED"
except Exception as e:
    out["ccxt"] = type(e).__name__
settings = load_settings()
home = StateHome(settings.QTS_HOME)
store = Store.open(home)
feed = CcxtFeed(ex, ["BTC/USDT"], 5)
broker = LiveBroker(store, feed, ex)
broker.reconciled = True
r = Gate(store, feed, broker, settings=settings).submit(OrderIntent("BTC/USDT", "buy", 0.01, client_order_id="x1"))
out["gate without agent"] = r.reason_code
client = ExchangeClient(ex, store, retries=0)
auth = Authority(ExchangeView(client, ["BTC/USDT"]),
                 Policy(grant=Grant.make(1e6, 1e7, ["BTC/USDT"], 8, int(time.time() * 1000)), max_orders_per_minute=999))
r = Gate(store, feed, broker, settings=settings, authority=auth).submit(OrderIntent("BTC/USDT", "buy", 0.01, client_order_id="x2"))
out["gate with a forged authority"] = [r.accepted, r.reason_code, r.status]
try:
    r = broker.place(OrderIntent("BTC/USDT", "buy", 0.01), "x3")
    out["broker.place"] = [r.accepted, r.status, r.reason_code]
except Exception as e:
    out["broker.place"] = type(e).__name__
print(json.dumps(out))
"""
    p = world.python(attack)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ccxt"] in ("AuthenticationError", "ArgumentsRequired", "PermissionDenied"), out
    assert out["gate without agent"] in ("NO_AGENT", "BREAKER_OPEN")  # refused, whichever check speaks first
    assert out["gate with a forged authority"][0] is False, out     # no keys: the exchange refuses
    # the live broker straight, no gate: the exchange refuses an unsigned order (or ccxt refuses to send one)
    assert out["broker.place"] == [False, "rejected", "EXCHANGE_REJECTED"], out
    # a spool intent that claims the kill switch's exemption is not even an order the agent reads
    code, res = order(world, "buy", 0.001, "fine")  # a legal one, for contrast
    assert code == 0 and res["status"] == "filled"
    spoof = world.python(f"""
import json
from qts.agent import protocol
from qts.agent.paths import AgentPaths
paths = AgentPaths.for_home({str(world.state_home)!r})
protocol.call(paths, "halt", {{"reason": "test"}})
print(json.dumps(protocol.call(paths, "order", {{"symbol": "BTC/USDT", "side": "sell", "amount": 0.001,
      "client_order_id": "spoof", "source": "kill_switch"}})))
""")
    ans = json.loads(spoof.stdout)
    assert not ans["ok"] and "source" in ans["message"], ans
    assert [o["clientOrderId"] for o in entries(world)] == [res["client_order_id"]]
    assert [(o["side"], o["origQty"]) for o in protective_stops(world)] == [("SELL", "0.00100000")]  # the agent's own
    assert_the_three_checks(world, [p.stdout, p.stderr, spoof.stdout])


# -- 4. two processes asking for the same decision at once ---------------------------------------------------

def test_concurrent_callers_get_one_order_per_decision_and_never_pass_the_daily_cap(world):
    a = world.start_agent("--no-loop", "--max-order", str(MAX_ORDER), "--max-daily", "700", "--accept-unconfined")
    procs = [world.popen([A.QTS, "order", "buy", "BTC/USDT", "0.002", "--client-order-id", "same-decision", "--json"])
             for _ in range(8)]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ids = {a["client_order_id"] for a in answers}
    assert len(ids) == 1 and all(a["accepted"] for a in answers), answers
    assert sum(1 for a in answers if a.get("duplicate")) == 7
    assert len([o for o in world.exchange_orders() if o["clientOrderId"] in ids]) == 1
    # ten different decisions of 300 USD at once against a 700 USD day (120 already bought): room for one
    procs = [world.popen([A.QTS, "order", "buy", "BTC/USDT", "0.005", "--client-order-id", f"d{i}", "--json"])
             for i in range(10)]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ok = [a for a in answers if a["accepted"]]
    refused = [a for a in answers if not a["accepted"]]
    assert len(ok) == 1 and all(a["reason_code"] == "LIVE_SCOPE" for a in refused), [
        (a["accepted"], a["reason_code"]) for a in answers]
    assert world.exchange_buy_notional() <= 700 + 1e-6
    a.stop()
    assert_the_three_checks(world)


# -- 5. kill -9 of the agent mid-order --------------------------------------------------------------------

def test_kill_9_mid_order_loses_nothing_and_doubles_nothing(world, agent):
    world.server.add_fault("latency", path="/api/v3/order", method="POST", times=1, delay=1.5)
    p = world.popen([A.QTS, "order", "buy", "BTC/USDT", "0.003", "--client-order-id", "mid-order", "--json"])
    deadline = time.time() + 10
    while time.time() < deadline and not world.server.state()["faults_fired"]:
        time.sleep(0.02)
    os.kill(agent.pid, signal.SIGKILL)
    agent.proc.wait(10)
    out, _ = p.communicate(timeout=120)
    first = json.loads(out)
    assert not first["accepted"] and first["reason_code"] == "NO_AGENT", first
    time.sleep(2)  # the exchange finishes the order it was given
    assert len(world.exchange_orders()) == 1 and protective_stops(world) == []  # killed before its stop
    # the human restarts the agent (PIN); the order is one the journal knows: not a rollback, not HALTED
    again = world.start_agent("--no-loop", "--accept-unconfined")
    assert "HALTED" not in again.output.split("policy")[-1].split("\n")[0]
    code, res = order(world, "buy", 0.003, "mid-order")  # the client retries the same decision
    assert code == 0 and res.get("duplicate") and res["status"] == "filled", res
    assert len(entries(world)) == 1
    # the restart gave the position the stop it never got: one reduce-only sell of the whole position
    assert [(o["side"], o["origQty"]) for o in protective_stops(world)] == [("SELL", "0.00300000")]
    assert_the_three_checks(world, [out])


# -- 6. the journal, deleted, edited or rolled back while the agent was down ---------------------------------

@pytest.mark.parametrize("damage", ["delete", "edit", "rollback"])
def test_a_damaged_journal_restarts_the_agent_halted_until_the_human_resumes(world, agent, damage):
    code, _ = order(world, "buy", 0.001, "before")
    assert code == 0
    journal = world.paths.journal
    early = journal.read_bytes()
    code, _ = order(world, "buy", 0.001, "after-copy")
    assert code == 0
    agent.stop()
    if damage == "delete":
        world.run(["rm", "-f", str(journal)])
    elif damage == "edit":
        lines = journal.read_text().splitlines()
        rec = json.loads(lines[0])
        rec["data"]["policy"] = dict(rec["data"]["policy"], max_daily_loss_usd=1e9)
        world.run(["sh", "-c", "cat > " + str(journal)], input=None)
        (world.base / "edited").write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
        world.run(["cp", str(world.base / "edited"), str(journal)])
    else:
        (world.base / "early").write_bytes(early)
        world.run(["cp", str(world.base / "early"), str(journal)])
    a2 = world.start_agent("--no-loop", "--accept-unconfined")
    assert "starting HALTED" in a2.output, a2.output
    code, res = order(world, "buy", 0.001, "while-halted")
    # (the kill switch speaks first where nothing verifiable said it was clear)
    assert code == 3 and res["reason_code"] in ("TRADING_HALTED", "KILL_SWITCH"), res
    assert world.agent_status()["policy"]["grant"] is None  # strict defaults: no grant survives
    code, out = world.in_terminal("agent", "approve", "resume")
    assert code == 0, out
    if world.agent_status()["policy"]["kill_switch"]:
        # nothing verifiable was left to say whether the switch was clear: it starts engaged too
        assert damage in ("delete", "edit")
        code, out = world.in_terminal("agent", "approve", "reset-kill-switch")
        assert code == 0, out
    code, out = world.in_terminal("agent", "approve", "grant", "--max-order", str(MAX_ORDER), "--max-daily", str(MAX_DAILY))
    assert code == 0, out
    code, res = order(world, "buy", 0.001, "after-resume")
    assert code == 0, (res["reason_code"], res["message"])
    assert_the_three_checks(world)


# -- 7. the kill switch, when everything else is broken ------------------------------------------------------

def test_kill_switch_reports_flat_from_the_exchange_even_with_the_database_gone(world, agent):
    for i in range(3):
        assert order(world, "buy", 0.002, f"k{i}")[0] == 0
    # an order the agent did not place, resting at the exchange (the human's, on the exchange's app)
    by_hand = world.python(f"""
import sys; sys.path.insert(0, {str(A.REPO / 'tests')!r})
from support.loopback_exchange import RemoteLoopback, make_ccxt_client
ex = make_ccxt_client(RemoteLoopback({world.server.base_url!r}, {world.server.api_key!r}, {world.server.secret!r}))
ex.load_markets(); ex.create_order("ETH/USDT", "limit", "buy", 0.01, 2500, {{"clientOrderId": "by-hand"}})
""")
    assert by_hand.returncode == 0, by_hand.stderr
    world.run(["rm", "-rf", str(world.state_home / "db")])
    t0 = time.perf_counter()
    p = world.run([str(A.REPO / "hooks" / "kill_switch.sh"), "--json"])
    wall = time.perf_counter() - t0
    rep = json.loads(p.stdout)
    assert p.returncode == 0 and rep["flat"] and rep["live"]["verified"], p.stdout
    assert [c["client_order_id"] for c in rep["live"]["report"]["cancelled_foreign"]] == ["by-hand"], rep["live"]
    t = A.totals(world.server)
    assert t.get("BTC", 0) < 1e-5 and not [o for o in world.exchange_orders() if o["status"] in ("NEW", "PARTIALLY_FILLED")]
    assert wall < 30


def test_kill_switch_without_an_agent_says_unverified_and_never_asks_for_the_pin(world):
    p = world.run([str(A.REPO / "hooks" / "kill_switch.sh")])
    assert p.returncode == 1
    assert "UNVERIFIED" in p.stdout and "PIN" not in p.stdout.split("Resetting")[0], p.stdout
    assert (world.state_home / "safety" / "KILL_SWITCH").exists()


def test_an_exchange_url_planted_in_the_projects_env_file_is_not_followed(world):
    # the assistant can write the project's .env: a proxy there could drop the kill switch's cancels and
    # answer "flat". The agent takes where it trades only from the human's own environment.
    env_file = world.state_home / ".env"
    world.run(["sh", "-c", f"mkdir -p {world.state_home} && echo 'EXCHANGE_URL=http://127.0.0.1:9' > {env_file}"])
    with pytest.raises(AssertionError) as e:
        world.start_agent("--no-loop", "--accept-unconfined", env={"EXCHANGE_URL": ""}, expect="listening",
                          timeout=30)
    assert "EXCHANGE_URL set in" in str(e.value) and "terminal's environment" in str(e.value)
    assert world.exchange_orders() == []


def test_the_monitors_kill_switch_flattens_live_positions_through_the_agent(world, agent):
    """POST /kill-switch (the dashboard's button) in live mode: the same request as hooks/kill_switch.sh, so
    the agent flattens at the exchange and the answer is verified there, not "run qts kill-switch"."""
    for i in range(2):
        assert order(world, "buy", 0.002, f"mon{i}")[0] == 0
    assert A.totals(world.server).get("BTC", 0) > 0.003
    token = "t" * 24
    p = world.python(f"""
import json, urllib.request
from qts.paths import StateHome
from qts.monitor.server import start_monitor
srv = start_monitor(StateHome.resolve(None), port=0, token={token!r})
req = urllib.request.Request(srv.url + "/kill-switch", data=json.dumps({{"reason": "dashboard"}}).encode(),
                             headers={{"Authorization": "Bearer {token}", "Content-Type": "application/json"}},
                             method="POST")
with urllib.request.urlopen(req, timeout=90) as r:
    print(r.read().decode())
srv.stop()
""", timeout=150)
    assert p.returncode == 0, p.stderr[-2000:]
    body = json.loads(p.stdout[p.stdout.index("{"):])  # the monitor's answer (pretty-printed JSON)
    assert body["engaged"] is True and body["flat"] is True and body["failed"] == [], body
    assert body["live"]["agent"] is True and body["live"]["verified"] is True, body["live"]
    # flat at the exchange itself, and nothing resting (the protective stops cancelled too)
    assert A.totals(world.server).get("BTC", 0) < 1e-5
    assert not [o for o in world.exchange_orders() if o["status"] in ("NEW", "PARTIALLY_FILLED")]
    assert (world.state_home / "safety" / "KILL_SWITCH").exists()
