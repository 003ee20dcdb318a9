#!/usr/bin/env bash
# export_plugin: write the plugin's own files (no virtualenv, no run state, no caches) to a folder outside
# the checkout, for `claude plugin marketplace add`.
#   scripts/export_plugin.sh [DEST]
#     DEST  default: ${XDG_DATA_HOME:-~/.local/share}/quant-trading-system/plugin
# Why: Claude Code installs a plugin from a folder marketplace by copying the whole folder into its plugin
# cache, files git ignores included (.venv, .demo, .numba-cache, a .env: 1.3 GB and possibly secrets). The
# export holds the files git tracks (as they are in the working tree), so an install carries only those,
# and /quant-trading-system:setup builds the one virtualenv, in Claude Code's per-plugin data folder.
# Installing from the git URL needs none of this: a clone holds only tracked files.
set -euo pipefail

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
root=$(dirname -- "$here")
dest=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/quant-trading-system/plugin}

case "$dest" in
  "$root"|"$root"/*) echo "export_plugin: DEST must be outside the checkout ($root): the copy would be copied again" >&2
                     exit 2 ;;
esac
git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  || { echo "export_plugin: $root is not a git checkout; install from the git URL instead" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qts-plugin-export.XXXXXX")
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# tracked files that exist in the working tree (a file deleted but not yet committed is left out)
(cd "$root" && git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$tmp"
# replace DEST in one step: a half-written export must never be installed
mkdir -p "$(dirname -- "$dest")"
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
trap - EXIT
rm -rf "$dest.old"
size=$(du -sh "$dest" | cut -f1)
echo "exported the plugin ($size, tracked files only) to $dest"
echo "install it into Claude Code with:"
echo "  claude plugin marketplace add $dest"
echo "  claude plugin install quant-trading-system@quant-trading-system"
