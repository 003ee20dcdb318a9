#!/bin/sh
# circuit_breaker: show the breaker and trading state, run a one-shot check, or watch.
#   hooks/circuit_breaker.sh            # status
#   hooks/circuit_breaker.sh check      # evaluate once (trip on problems, recover over time)
#   hooks/circuit_breaker.sh --watch    # keep checking every 10 s (--every N to change)
#   hooks/circuit_breaker.sh trip       # open it now: live stops, paper continues
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; echo; exec "$here/_qts.sh" breaker --help ;;
  --watch) shift; exec "$here/_qts.sh" breaker check --watch "$@" ;;
  "") exec "$here/_qts.sh" breaker status ;;
esac
exec "$here/_qts.sh" breaker "$@"
