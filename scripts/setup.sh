#!/usr/bin/env bash
# setup: the plugin's Python environment, the state home, the emergency kill-switch shim and (offered) the sandbox settings. Idempotent.
#   scripts/setup.sh [--project DIR] [--data DIR] [--venv DIR] [--python PY] [--no-shim] [--confine]
#     --project DIR  the user's project (default: $CLAUDE_PROJECT_DIR, else the current directory)
#     --data DIR     Claude Code's per-plugin data folder (default: $CLAUDE_PLUGIN_DATA)
#     --venv DIR     where the virtualenv goes (default: DATA/venv, else <plugin>/.venv: the places
#                    hooks/_qts.sh looks)
#     --python PY    the Python (3.11+) that creates the virtualenv (default: python3)
#     --no-shim      do not write <project>/.claude/hooks/kill_switch.sh
#     --confine      write the Claude Code sandbox settings live trading requires into
#                    <project>/.claude/settings.json (without it: check them and print what is missing)
# The state home is $QTS_HOME when set, else <project>/.quant-trading (created with `qts db migrate`).
# A second run skips the install when the virtualenv already holds this version of the plugin.
# Exit 1 when a step fails, or when --confine could not make the project confined.
set -euo pipefail

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
project="${CLAUDE_PROJECT_DIR:-}"
data="${CLAUDE_PLUGIN_DATA:-}"
venv=""
python="${QTS_SETUP_PYTHON:-python3}"
shim=1
confine=0

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "setup: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --project) [ $# -ge 2 ] || die "--project needs a folder"; project=$2; shift 2 ;;
    --data) [ $# -ge 2 ] || die "--data needs a folder"; data=$2; shift 2 ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; venv=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
    --no-shim) shim=0; shift ;;
    --confine) confine=1; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# A placeholder Claude Code did not expand (for example when the script is run by hand) counts as unset.
case "$project" in *'${'*) project="" ;; esac
case "$data" in *'${'*) data="" ;; esac
[ -n "$project" ] || project=$(pwd)
[ -d "$project" ] || die "project folder not found: $project"
project=$(CDPATH= cd -- "$project" && pwd)
if [ -z "$venv" ]; then
  if [ -n "$data" ]; then venv="$data/venv"; else venv="$root/.venv"; fi
fi

step() { printf '==> %s\n' "$*"; }

# 1. Python 3.11+
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
  || die "Python 3.11+ is required ($python: $("$python" --version 2>&1 || echo 'not found'))"

# 2. the virtualenv and the plugin installed into it (skipped when this exact version is already there)
stamp="$venv/.qts-installed"
want=$("$python" - "$root/pyproject.toml" <<'EOF'
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
EOF
)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] \
   && "$venv/bin/python" -c 'import click, pydantic, ccxt' >/dev/null 2>&1; then
  step "virtualenv $venv already holds this version of the plugin: install skipped"
else
  if [ ! -x "$venv/bin/python" ]; then
    step "creating the virtualenv in $venv"
    mkdir -p "$(dirname -- "$venv")"
    "$python" -m venv "$venv"
  fi
  step "installing quant-trading-system and its libraries into $venv (first time: several minutes)"
  "$venv/bin/python" -m pip install --upgrade --progress-bar on pip
  "$venv/bin/python" -m pip install --progress-bar on -c "$root/constraints.txt" "$root"
  step "compiling the backtest kernels once (numba, ~20 s): the first backtest is then fast"
  "$venv/bin/python" -m qts.research.warmup \
    || echo "setup: note: kernels not pre-compiled; the first backtest compiles them" >&2
  printf '%s\n' "$want" > "$stamp"
fi

# hooks/_qts.sh looks in $CLAUDE_PLUGIN_DATA/venv, which the assistant's shell commands do not have in their
# environment: point <plugin>/.venv at the virtualenv too (never replacing a real folder).
if [ -n "$data" ] && [ "$venv" = "$data/venv" ] && { [ -L "$root/.venv" ] || [ ! -e "$root/.venv" ]; }; then
  if ln -sfn "$venv" "$root/.venv" 2>/dev/null; then
    step "linked $root/.venv -> $venv"
  else
    echo "setup: note: could not link $root/.venv (the assistant's commands then need QTS_PYTHON=$venv/bin/python)" >&2
  fi
fi

# 3. the state home and its database
if [ -n "${QTS_HOME:-}" ]; then state="$QTS_HOME"; else state="$project/.quant-trading"; fi
step "state home $state"
QTS_HOME="$state" QTS_PYTHON="$venv/bin/python" "$root/hooks/_qts.sh" db migrate

# 3b. Claude Code's sandbox settings: live trading requires the assistant's commands to run confined (the
# key store unreadable, the agent's files unwritable). Offered, never forced: --confine writes them.
confine_cmd="python3 -S $(printf '%q' "$root/hooks/_hook.py") confine --write --project $(printf '%q' "$project")"
confined=0
if [ "$confine" = 1 ]; then
  step "writing the sandbox settings live trading requires into $project/.claude/settings.json"
  if QTS_HOME="$state" "$python" -S "$root/hooks/_hook.py" confine --write --project "$project"; then confined=1; fi
else
  step "checking the sandbox settings live trading requires (nothing is written without --confine)"
  if QTS_HOME="$state" "$python" -S "$root/hooks/_hook.py" confine --project "$project"; then
    confined=1
  else
    echo "setup: to write them: $(printf '%q' "$root/scripts/setup.sh") --project $(printf '%q' "$project") --confine"
    echo "setup:   (or directly: $confine_cmd)"
  fi
fi

# 4. the emergency shim, so a plain shell in the project can stop everything
if [ "$shim" = 1 ]; then
  dest="$project/.claude/hooks/kill_switch.sh"
  mkdir -p "$(dirname -- "$dest")"
  q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
  tmp="$dest.tmp.$$"
  {
    echo '#!/bin/sh'
    echo '# Emergency kill switch for quant-trading-system, written by its scripts/setup.sh. Run it from any shell:'
    echo '#   .claude/hooks/kill_switch.sh [--reason TEXT] | status | reset (reset asks for the PIN)'
    echo '# It runs the installed plugin'"'"'s hooks/kill_switch.sh: the one recorded at setup, else the newest'
    echo '# version in the Claude Code plugin cache.'
    echo "recorded=$(q "$root")"
    echo "project=$(q "$project")"
    if [ -n "${QTS_HOME:-}" ]; then echo "state=$(q "$state")"; else echo "state="; fi
    echo "venv_python=$(q "$venv/bin/python")"
    cat <<'EOF'
[ -n "${QTS_HOME:-}" ] || { [ -n "$state" ] && QTS_HOME=$state && export QTS_HOME; }
[ -n "${CLAUDE_PROJECT_DIR:-}" ] || { CLAUDE_PROJECT_DIR=$project; export CLAUDE_PROJECT_DIR; }
[ -n "${QTS_PYTHON:-}" ] || { [ -x "$venv_python" ] && QTS_PYTHON=$venv_python && export QTS_PYTHON; }
target=""
if [ -x "$recorded/hooks/kill_switch.sh" ]; then
  target="$recorded/hooks/kill_switch.sh"
else
  target=$(ls -d "${HOME:-/nonexistent}"/.claude/plugins/cache/*/quant-trading-system/*/hooks/kill_switch.sh 2>/dev/null \
           | sort -V | tail -n 1)
fi
if [ -z "$target" ] || [ ! -x "$target" ]; then
  echo "kill_switch: the quant-trading-system plugin was not found (looked at $recorded and ~/.claude/plugins/cache)." >&2
  echo "kill_switch: run its hooks/kill_switch.sh directly, or reinstall the plugin and run /quant-trading-system:setup." >&2
  exit 1
fi
exec "$target" "$@"
EOF
  } > "$tmp"
  chmod 755 "$tmp"
  mv -f "$tmp" "$dest"
  step "emergency shim $dest -> $root/hooks/kill_switch.sh"
fi

step "done. Emergency stop from any shell in the project: .claude/hooks/kill_switch.sh"
if [ "$confined" = 1 ]; then
  step "the sandbox settings confine the assistant as live trading requires (restart Claude Code after a change)"
elif [ "$confine" = 1 ]; then
  echo "setup: the sandbox settings are still NOT complete (see above): live trading needs them, or the human's PIN-signed acknowledgement of running unconfined" >&2
  exit 1
else
  step "NOT confined for live trading yet (paper trading is fine): rerun with --confine to write the sandbox settings"
fi
