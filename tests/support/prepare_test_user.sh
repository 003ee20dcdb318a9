#!/bin/sh
# The red-team suite runs the trading agent and the attacking "assistant" as ONE unprivileged user (the
# agent rightly refuses to run as root). As root, this creates that user (qtsagent, no home, no login) and
# lets it execute the test Python: it adds only the traverse bit (o+x, not read) to the folders above the
# interpreter that lack it (pyenv keeps Python under /root, mode 0700). Idempotent; does nothing unless root.
# The repository's own folders are handled the same way (a clone under /root, say).
#   tests/support/prepare_test_user.sh PYTHON [REPO]
set -eu
[ "$(id -u)" = 0 ] || exit 0
py=${1:-python3}
repo=${2:-}
user=${QTS_TEST_USER:-qtsagent}
if ! id "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$user" 2>/dev/null \
    || useradd -r -M -s /usr/sbin/nologin "$user" \
    || { echo "prepare_test_user: could not create $user; the red-team tests will be skipped" >&2; exit 0; }
fi
real=$("$py" -c 'import os, sys; print(os.path.realpath(sys.executable))')
base=$("$py" -c 'import sys; print(sys.base_prefix)')
for target in "$real" "$base/lib" ${repo:+"$repo/x"}; do
  d=$(dirname "$target")
  while [ "$d" != "/" ]; do
    perm=$(stat -c %A "$d")
    case "$perm" in
      d????????x|d????????t) ;;
      *) chmod o+x "$d" && echo "prepare_test_user: o+x on $d (traverse only) for $user" ;;
    esac
    d=$(dirname "$d")
  done
done
