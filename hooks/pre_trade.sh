#!/bin/sh
# pre_trade: the gate's verdict on a proposed order, placing nothing.
#   hooks/pre_trade.sh buy BTC/USDT 0.01 [--limit 60000]
# With --hook it is Claude Code's PreToolUse hook (JSON on stdin): the tamper guard for every Bash,
# Edit and Write call, and an early verdict for trade commands.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  --hook) exec python3 "$here/_hook.py" pre_tool_use ;;
  -h|--help|"") sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo; exec "$here/_qts.sh" order --help ;;
esac
exec "$here/_qts.sh" order "$@" --dry-run
