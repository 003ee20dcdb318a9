#!/bin/sh
# Run the qts CLI with the plugin's Python environment, found in this order:
# $QTS_PYTHON, $CLAUDE_PLUGIN_DATA/venv, <plugin>/.venv, then python3 (which may lack the libraries).
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
py=""
for c in "${QTS_PYTHON:-}" "${CLAUDE_PLUGIN_DATA:+$CLAUDE_PLUGIN_DATA/venv/bin/python}" "$root/.venv/bin/python"; do
  if [ -n "$c" ] && [ -x "$c" ]; then py=$c; break; fi
done
if [ -z "$py" ]; then
  py=python3
  if ! "$py" -c 'import click, pydantic' >/dev/null 2>&1; then
    echo "quant-trading-system: no Python environment with its libraries (looked at \$QTS_PYTHON," \
         "\$CLAUDE_PLUGIN_DATA/venv and $root/.venv). Run /quant-trading-system:setup, or $root/scripts/setup.sh" >&2
    exit 1
  fi
fi
# The entry point `qts.cli:main`, called as the console script would (`-m qts.cli` runs the same program, but
# names itself differently in messages and costs an extra package lookup).
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -c 'import sys; sys.argv[0] = "qts"; from qts.cli import main; main()' "$@"
