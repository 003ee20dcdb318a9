"""``qts agent start``: the trading agent's start, in the human's own terminal.

Two stages. The first (:func:`start`, inside the ordinary ``qts`` process) checks that there is a
terminal, notices exchange keys in the environment (to offer their import once), and replaces itself
with an isolated Python (``-I``, an allowlisted environment: hygiene.py). The second
(:func:`isolated_main`) hardens the process, refuses to run where its memory could be read, asks for
the PIN on the terminal, unlocks the exchange keys and the journal key, restores its policy from the
journal (or starts in strict defaults when anything is missing or fails to verify) and serves.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from . import hygiene
from .paths import AgentPaths

EXIT_REFUSED = 2
JOURNAL_PURPOSE = b"agent-journal-v1"
MARKER = "agent_initialized"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qts agent start", add_help=True)
    ap.add_argument("--home")
    ap.add_argument("--no-loop", action="store_true")
    ap.add_argument("--max-order", type=float)
    ap.add_argument("--max-daily", type=float)
    ap.add_argument("--max-daily-loss", type=float)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--symbols")
    ap.add_argument("--accept-unconfined", action="store_true")
    ap.add_argument("--accept-unverified-key", action="store_true")
    ap.add_argument("--keys-fd", type=int)
    return ap


# -- stage 1: in the ordinary process -----------------------------------------------------------------

def env_keys(settings) -> dict | None:
    """Exchange keys visible in the environment or the state home's .env (offered for import once)."""
    if settings.has_keys:
        return {"exchange": settings.EXCHANGE, "api_key": settings.EXCHANGE_API_KEY.get_secret_value(),
                "secret": settings.EXCHANGE_SECRET.get_secret_value()}
    return None


def start(argv: list[str], settings, python: str | None = None) -> int:
    """Replace this process with the isolated agent. Returns only on failure (exit code)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        os.close(fd)
    except OSError:
        from ..safety.tty import NO_TERMINAL_HELP

        print(f"error: {NO_TERMINAL_HELP}", file=sys.stderr)
        return EXIT_REFUSED
    env = hygiene.clean_environment()
    env["QTS_HOME"] = str(settings.QTS_HOME)
    args = list(argv)
    keys = env_keys(settings)
    if keys:
        r, w = os.pipe()
        os.write(w, json.dumps(keys).encode())
        os.close(w)
        os.set_inheritable(r, True)
        args += ["--keys-fd", str(r)]
    keys = None
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python or sys.executable, hygiene.isolated_argv(python or sys.executable, args), env)
    return EXIT_REFUSED  # not reached


# -- stage 2: the isolated agent ----------------------------------------------------------------------

def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _refuse(msg: str) -> int:
    print(f"refused: {msg}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def _read_keys_fd(fd: int | None) -> dict | None:
    if fd is None:
        return None
    try:
        raw = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            raw += chunk
        os.close(fd)
        return json.loads(raw)
    except (OSError, ValueError):
        return None


def _lock(paths: AgentPaths):
    import fcntl

    paths.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(paths.lock_file, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def make_exchange(settings, api_key: str, secret: str):
    import ccxt

    cls = getattr(ccxt, settings.EXCHANGE, None)
    if cls is None:
        raise ValueError(f"EXCHANGE: ccxt has no exchange {settings.EXCHANGE!r}")
    url = getattr(settings, "EXCHANGE_URL", None)
    # ccxt's own rate limiter, with its per-endpoint costs, always: behind EXCHANGE_URL may be a proxy to the
    # real exchange, and the ExchangeClient keeps no weights of its own (it only honours Retry-After)
    ex = cls({"apiKey": api_key, "secret": secret, "enableRateLimit": True, "timeout": 10_000})
    if settings.EXCHANGE.startswith("binance"):  # spot only: no margin or futures market lists, no wallet calls
        ex.options["fetchMarkets"] = {"types": ["spot"], "loadAllOptions": False}
        ex.options["fetchMargins"] = False
        ex.options["fetchCurrencies"] = False
        ex.has["fetchCurrencies"] = False
    ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    from ..market.ccxt_feed import apply_sandbox

    apply_sandbox(ex, bool(getattr(settings, "EXCHANGE_SANDBOX", False)))  # testnet keys go to the testnet
    if url:
        from ..market.exchange_url import apply_exchange_url

        apply_exchange_url(ex, url)
        ex.options["adjustForTimeDifference"] = False
    return ex


def restore_policy(records: list[dict], problem: str | None, exists: bool, paths: AgentPaths, exchange_orders_since,
                   now_ms: int):
    """(policy, notes, strict, sent, sent_intents) from the journal and the exchange's own order list:
    the policy to start in, what to tell the human, whether it is the strict start, the answers to the
    orders the journal records, and what was sent (coid -> intent).

    ``exchange_orders_since(ts) -> list[dict]``: the exchange's orders on the configured markets since
    ``ts`` (each with ``clientOrderId``)."""
    from .policy import Policy, strict_defaults

    notes: list[str] = []
    last = None
    sent: dict[str, dict] = {}
    intents: dict[str, dict] = {}
    for r in records:
        if r.get("kind") in ("policy", "start") and isinstance((r.get("data") or {}).get("policy"), dict):
            try:
                last = Policy.from_dict(r["data"]["policy"])
            except Exception:  # noqa: BLE001
                pass
        if r.get("kind") == "sending":
            intents[r["data"]["coid"]] = dict(r["data"], ts=r["data"].get("ts") or r.get("ts"))
            sent.setdefault(r["data"]["coid"], {"accepted": True, "status": "sent", "client_order_id": r["data"]["coid"],
                                                "filled": 0.0, "avg_price": None})
        if r.get("kind") == "order":
            sent[r["data"]["coid"]] = {"accepted": r["data"].get("status") != "rejected", "status": r["data"].get("status"),
                                       "client_order_id": r["data"]["coid"], "filled": r["data"].get("filled") or 0.0,
                                       "avg_price": r["data"].get("avg_price")}
    initialized = (paths.keystore / MARKER).exists()
    since = now_ms - 7 * 86_400_000
    if records:
        since = max(since, int(records[0].get("ts", since)) - 60_000)
    foreign = [o for o in exchange_orders_since(since)
               if str(o.get("clientOrderId") or "").startswith(("qtsa", "qtsl", "qtsk")) and o.get("clientOrderId") not in sent]
    if not exists:
        if initialized or foreign:
            why = ("the agent's journal is missing" + (f" and the exchange shows {len(foreign)} order(s) the agent "
                                                        "sent" if foreign else "") + ": starting HALTED")
            notes.append(why)
            return strict_defaults(last, why, now_ms), notes, True, sent, intents
        notes.append("first start for this state home: no journal yet")
        return Policy(changed_ts=now_ms), notes, False, sent, intents
    if problem:
        why = f"the journal does not verify ({problem}): starting HALTED with the last verified limits"
        notes.append(why)
        return strict_defaults(last, why, now_ms), notes, True, sent, intents
    if foreign:
        why = (f"the exchange shows {len(foreign)} order(s) the agent sent that its journal does not know "
               "(the journal was rolled back or replaced): starting HALTED")
        notes.append(why)
        return strict_defaults(last, why, now_ms), notes, True, sent, intents
    if last is None:
        notes.append("the journal holds no policy yet")
        return Policy(changed_ts=now_ms), notes, False, sent, intents
    notes.append(f"policy restored from the journal ({len(records)} records verified)")
    return last, notes, False, sent, intents


# Where the agent sends signed requests, and to which exchange, must come from the human: the project's
# .env is a file the sandboxed assistant can write (it could point EXCHANGE_URL at a proxy that drops the
# kill switch's cancels and answers "flat").
FROM_TERMINAL_ONLY = ("EXCHANGE_URL", "EXCHANGE")


def _settings_from_project_files(home) -> str | None:
    from ..config import ConfigError, parse_env_file

    try:
        file_vals = parse_env_file(home.env_file)
    except ConfigError as e:
        return str(e)
    bad = [k for k in FROM_TERMINAL_ONLY if k in file_vals and file_vals[k] != os.environ.get(k, file_vals[k] + "x")]
    if bad:
        return (f"{', '.join(bad)} set in {home.env_file}: the agent takes these only from your terminal's "
                "environment (the assistant can write that file). Remove them there and export them in this "
                "terminal if you mean them.")
    return None


def isolated_main(argv: list[str]) -> int:
    problems = hygiene.harden()  # first thing: nothing else has read a secret yet
    args = _parser().parse_args(argv)
    env_key_blob = _read_keys_fd(args.keys_fd)
    if problems and sys.platform.startswith("linux"):
        return _refuse("; ".join(problems))
    why = hygiene.refusals()
    if why:
        return _refuse("; ".join(why))
    from ..config import ConfigError, load_settings

    try:
        settings = load_settings(home=args.home)
    except ConfigError as e:
        return _refuse(str(e))
    from ..paths import StateHome

    home = StateHome(settings.QTS_HOME).ensure()
    why = _settings_from_project_files(home)
    if why:
        return _refuse(why)
    paths = AgentPaths.for_home(home.root)
    lock = _lock(paths)
    if lock is None:
        return _refuse(f"another trading agent is already running for {home.root}")
    code = hygiene.code_hash()
    _say("quant-trading-system trading agent")
    _say(f"  code sha256  {code}")
    _say(f"  python       {sys.version.split()[0]} (isolated: {bool(sys.flags.isolated)}), pid {os.getpid()}, "
         f"uid {os.getuid()}, dumpable {hygiene.dumpable()}")
    _say(f"  state home   {home.root}")
    _say(f"  exchange     {settings.EXCHANGE}" + (f" at EXCHANGE_URL={settings.EXCHANGE_URL} (fixed until restart)"
                                                   if getattr(settings, "EXCHANGE_URL", None) else ""))
    from .confinement import check as check_confinement

    project = Path(os.environ.get("CLAUDE_PROJECT_DIR") or home.root.parent)
    conf = check_confinement(project, paths)
    notes: list[str] = []
    if not conf.ok:
        _say("  confinement  NOT confined: " + "; ".join(conf.missing[:6] + conf.problems[:3]))
        if not args.accept_unconfined:
            _say("  Write the sandbox settings with `qts agent confine --write` (or /quant-trading-system:setup), or")
            _say("  start with --accept-unconfined to acknowledge, with your PIN, that the guarantee does not hold.")
            return _refuse("Claude Code's sandbox is not configured for live trading")
        notes.append("running UNCONFINED (acknowledged with the PIN at start): the guarantee does not hold")
    else:
        _say("  confinement  Claude Code sandbox settings present")

    from ..safety import pin as pinmod
    from ..safety import secret_store
    from ..safety.tty import NoTerminal, SecretCancelled, read_secret

    try:
        pinmod.load_record(home)
    except pinmod.PinError as e:
        return _refuse(f"{e} (set one in your terminal: qts approve set-pin)")
    try:
        secret = read_secret("PIN to unlock the trading agent: ")
    except (NoTerminal, SecretCancelled, KeyboardInterrupt) as e:
        return _refuse(str(e) or "cancelled")
    except ValueError as e:
        return _refuse(str(e))
    try:
        key = pinmod.unlock(home, secret)
    except pinmod.PinError as e:
        return _refuse(str(e))
    finally:
        secret = None
    if hygiene.tracer_pid() != 0:
        return _refuse("the process became traced while the PIN was typed")
    instance = secrets.token_hex(8)
    journal_key = key.derive_key(JOURNAL_PURPOSE)
    public_key, fingerprint = key.public_key, key.fingerprint
    _say(f"  PIN key      {fingerprint[:16]}... (the agent's trust anchor until it stops)")

    # exchange keys: only from the key store; keys in the environment are offered for import once
    if env_key_blob and not secret_store.exists(home):
        _say(f"  Exchange keys for {env_key_blob.get('exchange')} were found in your environment/.env.")
        try:
            ans = read_secret("  Import them into the encrypted key store? Type 'import' (anything else: no): ")
        except (NoTerminal, SecretCancelled, ValueError):
            ans = ""
        if ans.strip().lower() == "import":
            secret_store.store_keys(home, key, env_key_blob["exchange"], env_key_blob["api_key"], env_key_blob["secret"])
            _say("  imported. Now remove EXCHANGE_API_KEY and EXCHANGE_SECRET from your environment and .env files:")
            _say("  every command the assistant runs can read them there.")
    elif env_key_blob:
        _say("  note: exchange keys in your environment/.env are IGNORED for live trading (the key store's are used);")
        _say("        remove them: every command the assistant runs can read them.")
    env_key_blob = None
    try:
        keys = secret_store.load_keys(home, key)
    except secret_store.SecretStoreError as e:
        return _refuse(f"{e}. Store them in your terminal: qts approve store-keys")
    if keys.get("exchange") and keys["exchange"] != settings.EXCHANGE:
        return _refuse(f"the stored keys are for {keys['exchange']}, not EXCHANGE={settings.EXCHANGE}")
    from .service import account_id

    account = account_id(settings.EXCHANGE, keys["api_key"])
    ack_sig = None
    if not conf.ok:
        ack_sig = key.sign(b"quant-trading-system/agent-unconfined-ack/v1\x00" + instance.encode() + b"|"
                           + str(home.root).encode()).hex()
    key = None  # the signing key is not kept: the agent signs nothing on request

    try:
        exchange = make_exchange(settings, keys["api_key"], keys["secret"])
    except Exception as e:  # noqa: BLE001
        return _refuse(f"cannot set up {settings.EXCHANGE}: {e}")
    keys = None
    from ..broker.permissions import check_live_keys

    try:
        exchange.load_markets()
    except Exception as e:  # noqa: BLE001
        return _refuse(f"{settings.EXCHANGE} did not answer ({e.__class__.__name__}: {str(e)[:160]}); offline?")
    ok, why = check_live_keys(exchange, accept_unverified=args.accept_unverified_key)
    _say(f"  key check    {why}")
    if not ok:
        return _refuse(why)

    from ..store import Store
    from . import journal as jmod

    store = Store.open(home)
    now = int(time.time() * 1000)
    ver = jmod.read(paths.journal, journal_key)

    def exchange_orders_since(ts: int) -> list[dict]:
        out = []
        for s in settings.SYMBOLS:
            try:
                out += exchange.fetch_orders(s, ts)
            except Exception:  # noqa: BLE001 - no order history: the check is skipped, and said so
                notes.append(f"could not read {s}'s order history to check the journal against it")
        return out
    policy, more, strict, sent, sent_intents = restore_policy(ver.records, ver.problem, ver.exists, paths, exchange_orders_since, now)
    notes += more
    journal = jmod.Journal.restart(paths.journal, journal_key, ver.records) if ver.problem else \
        jmod.Journal(paths.journal, journal_key, ver.records)
    from .policy import PolicyError

    flatten_now = False
    if home.kill_flag.exists() and not policy.kill_switch:
        # engaged while the agent was down (the report then said UNVERIFIED): flatten now, from the exchange's view
        policy, _ = policy.tighten("engage", {"reason": "kill-switch flag file present at start"}, now)
        flatten_now = True
    if args.max_order is not None or args.max_daily is not None:
        try:
            policy, what = policy.loosen("grant", {
                "max_order_usd": args.max_order if args.max_order is not None else 100.0,
                "max_daily_usd": args.max_daily if args.max_daily is not None else 1000.0,
                "symbols": args.symbols or ",".join(settings.SYMBOLS), "hours": args.hours,
                **({"max_daily_loss_usd": args.max_daily_loss} if args.max_daily_loss is not None else {})}, now)
            notes.append(what)
        except PolicyError as e:
            return _refuse(str(e))
    from dataclasses import replace

    policy = replace(policy, unconfined_acknowledged=not conf.ok)
    journal.append("start", {"instance": instance, "code_hash": code, "key_fingerprint": fingerprint,
                             "account": account, "exchange": settings.EXCHANGE,
                             "exchange_url": getattr(settings, "EXCHANGE_URL", None), "policy": policy.to_dict(),
                             "confined": conf.ok, "unconfined_ack_signature": ack_sig, "strict": strict,
                             "notes": notes})
    (paths.keystore / MARKER).write_text(str(now))

    from .service import AgentConfig, TradingAgent

    cfg = AgentConfig(settings=settings, paths=paths, exchange=exchange, public_key=public_key,
                      key_fingerprint=fingerprint, journal=journal, policy=policy, account=account, instance=instance,
                      code_hash=code, store=store, run_loop=not args.no_loop, confined=conf.ok,
                      exchange_url=getattr(settings, "EXCHANGE_URL", None), notes=notes, sent=sent,
                      sent_intents=sent_intents, say=_say)
    agent = TradingAgent(cfg)
    try:
        agent.start()
        if flatten_now:
            agent._flatten_pending.set()
    except Exception as e:  # noqa: BLE001
        journal.append("stop", {"reason": f"start failed: {e.__class__.__name__}: {e}"})
        return _refuse(f"start failed: {e.__class__.__name__}: {str(e)[:300]}")
    for n in notes:
        _say(f"  note         {n}")
    _say(f"  policy       {policy.summary()}")
    if strict:
        _say("  Anything changed while the agent was down is listed above. Trading stays HALTED until you")
        _say("  resume with the PIN: qts agent approve resume")
    _say(f"  listening    spool {paths.spool} and socket {paths.socket}")
    _say("  Ctrl-C here stops the agent (live trading then stops).")

    def on_signal(signum, frame):
        agent.request_stop("Ctrl-C on the agent's terminal" if signum == signal.SIGINT else f"signal {signum}")
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        agent.wait()
    finally:
        agent.shutdown()
        store.close()
        _say(f"agent stopped: {agent.stop_reason or 'stopped'}")
        lock.close()
    return 0
