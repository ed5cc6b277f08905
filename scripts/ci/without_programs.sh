#!/usr/bin/env bash
# Run a command as on a machine without some programs: `scripts/ci/without_programs.sh ffmpeg espeak-ng -- CMD...`
# builds a folder of links to every program on PATH except the named ones and runs CMD with only that
# folder on PATH (so `command -v ffmpeg` fails even where /usr/bin has it). .ci/run uses it for the
# pipeline tests; `scripts/ci/without_programs.sh ffmpeg ffprobe espeak-ng chromium -- make test` is the
# whole suite as on a fresh machine.
set -euo pipefail
hide=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do hide+=("$1"); shift; done
[ $# -gt 1 ] || { echo "usage: $0 PROGRAM... -- COMMAND..." >&2; exit 2; }
shift
bin=$(mktemp -d "${TMPDIR:-/tmp}/without_programs.XXXXXX")
trap 'rm -rf "$bin"' EXIT
IFS=: read -r -a dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  for exe in "$dir"/*; do
    name=${exe##*/}
    [ -x "$exe" ] && [ ! -d "$exe" ] && [ ! -e "$bin/$name" ] || continue
    for h in "${hide[@]}"; do [ "$name" = "$h" ] && continue 2; done
    ln -s "$exe" "$bin/$name"
  done
done
for h in "${hide[@]}"; do
  if PATH="$bin" command -v "$h" >/dev/null 2>&1; then echo "$0: could not hide $h" >&2; exit 2; fi
done
echo "running without ${hide[*]} on PATH: $*" >&2
PATH="$bin" "$@"
