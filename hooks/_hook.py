"""Run one Claude Code hook event: `python3 _hook.py pre_tool_use|post_tool_use|session_start|user_prompt_submit`.

`python3 _hook.py summary [PLUGIN_DATA_DIR]` prints the trading state as one plain line (for commands);
`python3 _hook.py confine [--write] [--project DIR] [--json]` checks (and writes) the sandbox settings.

Standard library only; located from this file's own path (the plugin cache folder's name is not
relied on). If the library cannot even be imported, a PreToolUse call is denied (fail closed).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))


def main() -> int:
    event = sys.argv[1] if len(sys.argv) > 1 else ""
    if event == "kill_flag":  # stdlib-only first step of hooks/kill_switch.sh (and of the kill-switch command)
        try:
            from qts.paths import StateHome
            from qts.safety.kill_switch import engage

            args = sys.argv[2:]
            reason = args[args.index("--reason") + 1] if "--reason" in args[:-1] else "manual"
            home = StateHome.resolve().ensure()
            engage(home, reason, notify=False)  # the full kill switch that follows sends the notification
            sys.stdout.write(f"kill switch flag set: {home.kill_flag} (reason: {reason})\n")
        except BaseException as e:  # noqa: BLE001 - say so; the full kill switch that follows retries the flag
            sys.stdout.write(f"FAILED to set the kill switch flag ({type(e).__name__}: {e}); run the full kill switch\n")
        return 0
    if event == "confine":  # `confine [--write] [--project DIR] [--json]`: Claude Code's sandbox settings (scripts/setup.sh)
        try:
            from qts.agent.confinement import cli_main
        except BaseException as e:  # noqa: BLE001
            sys.stderr.write(f"confine: the library could not be loaded ({type(e).__name__}: {e})\n")
            return 1
        return cli_main(sys.argv[2:])
    if event == "kill_switch":  # hooks/kill_switch.sh: flag, paper loop, the trading agent's report, paper flatten
        try:
            from qts.agent import kill

            return kill.main(sys.argv[2:])
        except BaseException as e:  # noqa: BLE001 - never silent: the flag may not be set
            sys.stdout.write(f"KILL SWITCH FAILED ({type(e).__name__}: {e}); run it again, or qts kill-switch\n")
            return 1
    if event == "summary":  # plain-text state for a slash command's !`...` line: stdlib only, ALWAYS exit 0
        # (a failing !`cmd` aborts the whole slash command before the model sees it)
        try:
            from qts.hooks import entry

            sys.stdout.write(entry.summary_text(sys.argv[2] if len(sys.argv) > 2 else "") + "\n")
        except BaseException as e:  # noqa: BLE001
            sys.stdout.write("[quant-trading-system] trading state unavailable (" + type(e).__name__
                             + "); treat trading as halted and run /quant-trading-system:setup\n")
        return 0
    try:
        data = sys.stdin.buffer.read(8_000_001).decode("utf-8", "replace")  # a 1 MB command, JSON-escaped
    except Exception:
        data = ""
    try:
        from qts.hooks import entry

        fn = {"pre_tool_use": entry.pre_tool_use, "post_tool_use": entry.post_tool_use,
              "session_start": entry.session_start, "user_prompt_submit": entry.user_prompt_submit}[event]
        code, out, err = fn(data)
    except BaseException as e:  # noqa: BLE001 - a hook must answer, never crash (a crash lets the tool run)
        if event == "pre_tool_use":
            sys.stdout.write('{"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny", '
                             '"permissionDecisionReason": "[quant-trading-system] safety hook failed to load ('
                             + type(e).__name__ + '); run /quant-trading-system:setup"}}')
        return 0
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
