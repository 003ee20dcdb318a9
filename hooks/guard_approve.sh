#!/bin/sh
# guard_approve: the human's approvals, typed in YOUR OWN terminal (never through the assistant).
#   hooks/guard_approve.sh set-pin        # set or change the PIN
#   hooks/guard_approve.sh live           # approve live trading (scoped, expires after 8 h)
#   hooks/guard_approve.sh store-keys     # keep the exchange keys encrypted under the PIN (recommended)
#   hooks/guard_approve.sh revoke         # end live trading now (no PIN needed)
#   hooks/guard_approve.sh status
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  -h|--help|"") sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; echo; exec "$here/_qts.sh" approve --help ;;
esac
exec "$here/_qts.sh" approve "$@"
