#!/bin/sh
# kill_switch: STOP EVERYTHING. Sets the kill-switch flag, stops the paper loop, tells the trading agent
# (live: it cancels every open order and sells every position on its markets, and says "flat" only when the
# exchange confirms), flattens the paper account. Safe to run twice. Works from any shell. Exit 0 = flat.
#   hooks/kill_switch.sh [--reason TEXT] [--json]
#   hooks/kill_switch.sh status
#   hooks/kill_switch.sh reset            # paper side; live: qts agent approve reset-kill-switch (PIN)
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  status|reset|engage) sub=$1; shift; exec "$here/_qts.sh" kill-switch "$sub" "$@" ;;
esac
# Standard library only (no virtualenv needed): the flag in milliseconds, then the agent's report. The paper
# account's flatten runs the qts CLI only when the paper account holds something.
exec python3 -S "$here/_hook.py" kill_switch "$@"
