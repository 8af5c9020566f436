#!/usr/bin/env bash
# benches/prune-compare.sh: cairn prune against restic prune on the same data,
# in one run.
#
#   benches/prune-compare.sh [--workdir DIR] [--scale S]
#
# Each tool backs up the `mixed` corpus of benches/corpus.py, then its
# `mutated` version (5% of the files overwritten in part, 2% appended, 1%
# deleted, 1% new), forgets the first snapshot and prunes, repacking packs
# with any unused data (--max-unused 0, so that the repacking is measured;
# the default 5% leaves this corpus's scattered garbage alone). cairn deletes in two
# phases: the first prune marks, a later one deletes; to measure the whole
# job in one run the grace period is set to 0 here (CAIRN_TEST_MIN_GRACE_SECS,
# the environment form of the CLI's hidden --unsafe-minimum-grace option, which
# only tests and this benchmark may use; the library never reads it) and the
# second prune's time is reported separately. Prints a Markdown table.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKDIR="$ROOT/target/prune-compare"
SCALE=0.5
while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORKDIR=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        -h|--help) sed -n 2,16p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

CAIRN="$ROOT/target/release/cairn"
[ -x "$CAIRN" ] || cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml"
command -v restic >/dev/null || { echo "restic not found: apt-get install restic" >&2; exit 1; }
mkdir -p "$WORKDIR"
CORPUS="$WORKDIR/corpus"
python3 "$HERE/corpus.py" gen mixed "$CORPUS/mixed" --scale "$SCALE" >&2
python3 "$HERE/corpus.py" gen mutated "$CORPUS/mutated" --from "$CORPUS/mixed" --scale "$SCALE" >&2
SRC="$WORKDIR/src"
export RESTIC_PASSWORD=bench CAIRN_PASSWORD=bench CAIRN_TEST_MIN_GRACE_SECS=0

seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>"$WORKDIR/last.err" || { cat "$WORKDIR/last.err" >&2; exit 1; }; printf "%.2f" "$(echo "$(date +%s.%N) - $s" | bc)"; }
size_mb() { du -sb "$1" | awk '{printf "%.1f", $1 / 1e6}'; }

rows=()
for tool in cairn restic; do
    repo="$WORKDIR/repo-$tool"
    rm -rf "$repo" "$SRC" "$WORKDIR/cache-$tool"
    export CAIRN_CACHE_DIR="$WORKDIR/cache-$tool" RESTIC_CACHE_DIR="$WORKDIR/cache-$tool"
    cp -a "$CORPUS/mixed" "$SRC"
    case $tool in
        cairn)
            "$CAIRN" -q -r "$repo" init >/dev/null
            "$CAIRN" -q -r "$repo" backup "$SRC"
            rm -rf "$SRC"; cp -a "$CORPUS/mutated" "$SRC"
            "$CAIRN" -q -r "$repo" backup "$SRC"
            before=$(size_mb "$repo")
            "$CAIRN" -q -r "$repo" forget --keep-last 1
            mark=$(seconds "$CAIRN" -q -r "$repo" prune --grace 0s --max-unused 0%)
            sweep=$(seconds "$CAIRN" -q -r "$repo" prune --grace 0s --max-unused 0%)
            total=$(printf "%.2f" "$(echo "$mark + $sweep" | bc)")
            check=$(seconds "$CAIRN" -q -r "$repo" check --read-data)
            ;;
        restic)
            restic -q -r "$repo" init >/dev/null
            restic -q -r "$repo" backup "$SRC"
            rm -rf "$SRC"; cp -a "$CORPUS/mutated" "$SRC"
            restic -q -r "$repo" backup "$SRC"
            before=$(size_mb "$repo")
            restic -q -r "$repo" forget --keep-last 1 >/dev/null
            total=$(seconds restic -q -r "$repo" prune --max-unused 0)
            mark="-"; sweep="-"
            check=$(seconds restic -q -r "$repo" check --read-data)
            ;;
    esac
    after=$(size_mb "$repo")
    rows+=("| $tool | $before | $after | $mark | $sweep | $total | $check |")
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); corpus mixed+mutated at scale $SCALE"
echo
echo "| tool | repo before MB | repo after MB | mark s | sweep s | prune total s | check --read-data s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
