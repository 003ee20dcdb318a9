#!/bin/sh
# guard_approve: the human's approvals, typed in YOUR OWN terminal (never through the assistant).
#   hooks/guard_approve.sh set-pin        # set or change the PIN (the key store lives outside the project)
#   hooks/guard_approve.sh store-keys     # keep the exchange keys encrypted under the PIN (the only way to live)
#   hooks/guard_approve.sh live [--max-order USD --max-daily USD --hours H]
#                                         # START THE TRADING AGENT here (asks for the PIN); it alone trades live
#   hooks/guard_approve.sh agent approve ...   # loosen the running agent's policy with the PIN (resume, grant, ...)
#   hooks/guard_approve.sh revoke         # end the running agent's live grant now (no PIN needed)
#   hooks/guard_approve.sh status
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  -h|--help|"") sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; echo; exec "$here/_qts.sh" approve --help ;;
  live) shift; exec "$here/_qts.sh" agent start "$@" ;;
  agent) shift; exec "$here/_qts.sh" agent "$@" ;;
  revoke) shift; exec "$here/_qts.sh" agent revoke "$@" ;;
esac
exec "$here/_qts.sh" approve "$@"
