#!/usr/bin/env bash
# benches/s3-compare.sh: backup and restore through an S3 repository with
# the latency of a distant service, cairn against restic, on the same data
# in one run.
#
#   benches/s3-compare.sh [--workdir DIR] [--scale S] [--delay MS] [--cairn PATH] [--port P]
#
# Starts a throwaway SeaweedFS (scripts/start-s3.sh) and, in front of it, a
# delaying TCP proxy (benches/delay-proxy.py: every byte MS later in each
# direction, default 10, so each request/answer round trip costs 2 x MS = 20
# ms more, without a bandwidth limit). Generates the `mixed` corpus of
# benches/corpus.py (scale 1 = 2 GiB in 2,000 files; default scale 0.5) and,
# for each tool, against its own prefix of one bucket through the proxy:
# init, the first backup, an unchanged rerun, and a restore into a local
# directory (checked with diff -r). Both tools run with their defaults and a
# fresh local cache per tool (kept between the steps, as on a real host).
# Prints a Markdown table and the ratios cairn / restic.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKDIR="$ROOT/target/s3-compare"
SCALE=0.5
DELAY=10
PORT=32300
CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORKDIR=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --delay) DELAY=$2; shift 2 ;;
        --cairn) CAIRN=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

[ -x "$CAIRN" ] || cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml"
command -v restic >/dev/null || { echo "restic not found: apt-get install restic" >&2; exit 1; }
mkdir -p "$WORKDIR"; WORKDIR=$(cd "$WORKDIR" && pwd)
CORPUS="$WORKDIR/corpus/mixed-$SCALE"
[ -d "$CORPUS" ] || python3 "$HERE/corpus.py" gen mixed "$CORPUS" --scale "$SCALE" >&2
BYTES=$(du -sb "$CORPUS" | cut -f1)

LOAD=$(cut -d" " -f1-3 /proc/loadavg)
rm -rf "$WORKDIR/s3" "$WORKDIR"/cache-* "$WORKDIR"/restore-*
eval "$(S3_BUCKET=bench bash "$ROOT/scripts/start-s3.sh" "$WORKDIR/s3" "$PORT")"
PROXY_PORT=$((PORT + 20000))
python3 "$HERE/delay-proxy.py" "$PROXY_PORT" "127.0.0.1:$PORT" "$DELAY" >"$WORKDIR/proxy.out" 2>&1 &
PROXY_PID=$!
trap 'kill $PROXY_PID 2>/dev/null || true; bash "$ROOT/scripts/stop-s3.sh" --rm "$WORKDIR/s3" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do grep -q ready "$WORKDIR/proxy.out" 2>/dev/null && break; sleep 0.1; done
ENDPOINT="http://127.0.0.1:$PROXY_PORT"
# One request through the proxy, to state the round trip it adds.
rtt=$(curl -s -o /dev/null -w '%{time_total}' "$ENDPOINT/" || echo 0)
export AWS_ENDPOINT_URL="$ENDPOINT" RESTIC_PASSWORD=bench CAIRN_PASSWORD=bench
unset AWS_CA_BUNDLE

seconds() {
    local s; s=$(date +%s.%N)
    "$@" >/dev/null 2>"$WORKDIR/last.err" || { cat "$WORKDIR/last.err" >&2; exit 1; }
    printf "%.2f" "$(echo "$(date +%s.%N) - $s" | bc)"
}

declare -A T
for tool in cairn restic; do
    target="$WORKDIR/restore-$tool"
    export CAIRN_CACHE_DIR="$WORKDIR/cache-$tool" RESTIC_CACHE_DIR="$WORKDIR/cache-$tool"
    case $tool in
        cairn) run() { "$CAIRN" -q -r "s3:bench/cairn" "$@"; }
               run init --kdf-memory 8MiB --kdf-iterations 1 >/dev/null ;;
        restic) run() { restic -q -r "s3:$ENDPOINT/bench/restic" "$@"; }
                run init >/dev/null ;;
    esac
    T[$tool,first]=$(seconds run backup "$CORPUS")
    T[$tool,again]=$(seconds run backup "$CORPUS")
    T[$tool,restore]=$(seconds run restore latest --target "$target")
    # cairn restores a one-directory backup's contents into the target;
    # restic recreates the absolute path under it.
    restored="$target"; [ "$tool" = restic ] && restored="$target$CORPUS"
    diff -r "$CORPUS" "$restored" >/dev/null || { echo "$tool: restore differs" >&2; exit 1; }
    rm -rf "$target"
done

calc() { printf "%.2f" "$(echo "scale=4; $1" | bc)"; }
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB;" \
    "load average before: $LOAD; SeaweedFS on loopback behind a proxy adding ${DELAY} ms each way" \
    "(one request through it: ${rtt}s); corpus mixed at scale $SCALE ($((BYTES / 1000000)) MB); restic $(restic version | cut -d' ' -f2)"
echo
echo "| step | cairn s | restic s | cairn / restic |"
echo "| --- | ---: | ---: | ---: |"
for step in first again restore; do
    name=$step; [ $step = first ] && name="first backup"; [ $step = again ] && name="unchanged rerun"
    echo "| $name | ${T[cairn,$step]} | ${T[restic,$step]} | **$(calc "${T[cairn,$step]} / ${T[restic,$step]}")** |"
done
