#!/usr/bin/env bash
# benches/sftp-compare.sh: backup throughput to SFTP on loopback, cairn
# against restic, on the same data in one run.
#
#   benches/sftp-compare.sh [--workdir DIR] [--scale S] [--cairn PATH]
#
# Starts a throwaway sshd on 127.0.0.1 (scripts/start-sshd.sh), generates the
# `mixed` corpus of benches/corpus.py (scale 1 = 2 GiB in 2,000 files, half
# random, half log-like text; default scale 0.5), and for each tool: init an
# `sftp:` repository on that server, time the first backup, an unchanged
# rerun and a restore out of the SFTP repository (verified with diff -r).
# Both tools reach the server through the same ssh wrapper (restic:
# -o sftp.command, cairn: --sftp-command) with 5 connections (both defaults).
# Prints a Markdown table; MB/s = corpus bytes / first-backup seconds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKDIR="$ROOT/target/sftp-compare"
SCALE=0.5
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
mkdir -p "$WORKDIR"; WORKDIR=$(cd "$WORKDIR" && pwd)
CORPUS="$WORKDIR/corpus/mixed"
[ -d "$CORPUS" ] || python3 "$HERE/corpus.py" gen mixed "$CORPUS" --scale "$SCALE" >&2
BYTES=$(du -sb "$CORPUS" | cut -f1)

SSHD="$WORKDIR/sshd"
PORT=$((20000 + RANDOM % 20000))
eval "$(bash "$ROOT/scripts/start-sshd.sh" "$SSHD" "$PORT")"
trap 'bash "$ROOT/scripts/stop-sshd.sh" "$SSHD"' EXIT
COMMAND="$SFTP_TEST_SSH $SFTP_TEST_HOST -s sftp"
export RESTIC_PASSWORD=bench CAIRN_PASSWORD=bench

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
    location="sftp:$SFTP_TEST_HOST:$repo"
    case $tool in
        cairn) run() { "$CAIRN" -q -r "$location" --sftp-command "$COMMAND" "$@"; } ;;
        restic) run() { restic -q -r "$location" -o sftp.command="$COMMAND" "$@"; } ;;
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
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); sshd $(ssh -V 2>&1 | cut -d, -f1) on 127.0.0.1; corpus mixed at scale $SCALE ($((BYTES / 1000000)) MB); restic $(restic version | cut -d' ' -f2)"
echo
echo "| tool | first backup s | MB/s | unchanged s | restore s | repo MB |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
