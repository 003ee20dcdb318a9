#!/bin/sh
# Run the qts CLI with the plugin's Python environment, found in this order:
# $QTS_PYTHON, $CLAUDE_PLUGIN_DATA/venv, <plugin>/.venv, then python3 (which may lack the libraries).
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
py=""
for c in "${QTS_PYTHON:-}" "${CLAUDE_PLUGIN_DATA:+$CLAUDE_PLUGIN_DATA/venv/bin/python}" "$root/.venv/bin/python"; do
  if [ -n "$c" ] && [ -x "$c" ]; then py=$c; break; fi
done
[ -n "$py" ] || py=python3
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m qts.cli "$@"
