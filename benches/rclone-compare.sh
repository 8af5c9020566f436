#!/usr/bin/env bash
# benches/rclone-compare.sh: backup throughput through rclone to a local
# remote, cairn against restic, on the same data in one run.
#
#   benches/rclone-compare.sh [--workdir DIR] [--scale S] [--cairn PATH]
#
# Generates the `mixed` corpus of benches/corpus.py (scale 1 = 2 GiB in 2,000
# files, half random, half log-like text; default scale 0.25), and for each
# tool: init an `rclone:DIR` repository (rclone's local backend standing in
# for a cloud remote), time the first backup, an unchanged rerun and a
# restore out of it (verified with diff -r). cairn runs `rclone serve restic`
# on a loopback port, restic runs it with --stdio (HTTP/2 over pipes); both
# use their default connections. Prints a Markdown table; MB/s = corpus
# bytes / first-backup seconds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKDIR="$ROOT/target/rclone-compare"
SCALE=0.25
CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORKDIR=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --cairn) CAIRN=$2; shift 2 ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

[ -x "$CAIRN" ] || cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml"
command -v restic >/dev/null || { echo "restic not found: apt-get install restic" >&2; exit 1; }
command -v rclone >/dev/null || { echo "rclone not found: apt-get install rclone" >&2; exit 1; }
mkdir -p "$WORKDIR"; WORKDIR=$(cd "$WORKDIR" && pwd)
CORPUS="$WORKDIR/corpus/mixed"
[ -d "$CORPUS" ] || python3 "$HERE/corpus.py" gen mixed "$CORPUS" --scale "$SCALE" >&2
BYTES=$(du -sb "$CORPUS" | cut -f1)
export RESTIC_PASSWORD=bench CAIRN_PASSWORD=bench RCLONE_CONFIG="$WORKDIR/rclone.conf"
touch "$RCLONE_CONFIG"

seconds() {
    local s; s=$(date +%s.%N)
    "$@" >/dev/null 2>"$WORKDIR/last.err" || { cat "$WORKDIR/last.err" >&2; exit 1; }
    printf "%.2f" "$(echo "$(date +%s.%N) - $s" | bc)"
}

rows=()
for tool in cairn restic; do
    repo="$WORKDIR/repo-$tool"
    target="$WORKDIR/restore-$tool"
    rm -rf "$repo" "$target" "$WORKDIR/cache-$tool"
    export CAIRN_CACHE_DIR="$WORKDIR/cache-$tool" RESTIC_CACHE_DIR="$WORKDIR/cache-$tool"
    case $tool in
        cairn) run() { "$CAIRN" -q -r "rclone:$repo" "$@" 2> >(grep -v 'no conditional create' >&2); } ;;
        restic) run() { restic -q -r "rclone:$repo" "$@"; } ;;
    esac
    run init >/dev/null
    first=$(seconds run backup "$CORPUS")
    again=$(seconds run backup "$CORPUS")
    restore=$(seconds run restore latest --target "$target")
    # cairn restores a one-directory backup's contents into the target;
    # restic recreates the absolute path under it.
    restored="$target"; [ "$tool" = restic ] && restored="$target$CORPUS"
    diff -r "$CORPUS" "$restored" >/dev/null || { echo "$tool: restore differs" >&2; exit 1; }
    mbps=$(echo "scale=1; $BYTES / 1000000 / $first" | bc)
    size=$(du -sb "$repo" | awk '{printf "%.1f", $1 / 1e6}')
    rows+=("| $tool | $first | **$mbps** | $again | $restore | $size |")
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(rclone version | head -1) (local remote); corpus mixed at scale $SCALE ($((BYTES / 1000000)) MB); restic $(restic version | cut -d' ' -f2)"
echo
echo "| tool | first backup s | MB/s | unchanged s | restore s | repo MB |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
