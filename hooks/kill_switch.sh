#!/bin/sh
# kill_switch: STOP EVERYTHING. Sets the kill-switch flag, stops the loop, cancels every open order
# and closes every position. Safe to run twice (it retries what is left). Works from any shell.
#   hooks/kill_switch.sh [--reason TEXT]
#   hooks/kill_switch.sh status
#   hooks/kill_switch.sh reset            # needs the PIN, in your own terminal
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  status|reset|engage) sub=$1; shift; exec "$here/_qts.sh" kill-switch "$sub" "$@" ;;
esac
# The flag first, with nothing but the standard library, so it holds even if the Python
# environment is broken; then the full run (stop the loop, cancel, flatten).
python3 "$here/_hook.py" kill_flag "$@" 2>/dev/null
exec "$here/_qts.sh" kill-switch engage "$@"
