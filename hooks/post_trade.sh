#!/bin/sh
# post_trade: what the last trade commands did, P&L and breaker state.
#   hooks/post_trade.sh            # summary of the state home
# With --hook it is Claude Code's PostToolUse hook: after a trade command it hands the assistant the
# orders' results, P&L and breaker state as additional context.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  --hook) exec python3 "$here/_hook.py" post_tool_use ;;
  --session-start) exec python3 "$here/_hook.py" session_start ;;
  --prompt-guard) exec python3 "$here/_hook.py" user_prompt_submit ;;
  -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
exec "$here/_qts.sh" status "$@"
