#!/usr/bin/env bash
# benches/bucket-compare.sh: backing up a bucket, cairn reading it directly
# against the usual two steps (rclone sync to local disk, then cairn backup
# of the copy), on the same bucket in one run.
#
#   benches/bucket-compare.sh [--workdir DIR] [--objects N] [--cairn PATH] [--port P]
#
# Starts a throwaway SeaweedFS (scripts/start-s3.sh), fills a bucket with N
# (default 10,000) mixed-size objects of random bytes (70% 100 B - 16 KiB,
# 28% 16 - 256 KiB, 2% 1 - 4 MiB, log-uniform; deterministic), and times:
#   direct:    cairn backup s3:bench (first run, then an unchanged rerun)
#   two steps: rclone sync bench: to a local directory + cairn backup of it
#              (first run, then an unchanged rerun of both)
# Each side writes to its own fresh local repository. rclone gets
# --transfers 16 --checkers 16, cairn its defaults (16 downloads). Prints a
# Markdown table, the ratio direct / two steps, and cairn's peak memory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORKDIR="$ROOT/target/bucket-compare"
OBJECTS=10000
PORT=32100
CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORKDIR=$2; shift 2 ;;
        --objects) OBJECTS=$2; shift 2 ;;
        --cairn) CAIRN=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

[ -x "$CAIRN" ] || cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml"
command -v rclone >/dev/null || { echo "rclone not found: apt-get install rclone" >&2; exit 1; }
mkdir -p "$WORKDIR"; WORKDIR=$(cd "$WORKDIR" && pwd)
rm -rf "$WORKDIR/s3" "$WORKDIR"/repo-* "$WORKDIR"/cache-* "$WORKDIR/copy"
eval "$(S3_BUCKET=bench bash "$ROOT/scripts/start-s3.sh" "$WORKDIR/s3" "$PORT")"
trap 'bash "$ROOT/scripts/stop-s3.sh" --rm "$WORKDIR/s3" >/dev/null 2>&1 || true' EXIT

# The objects, written once to a local directory and uploaded by rclone.
OBJDIR="$WORKDIR/objects-$OBJECTS"
if [ ! -d "$OBJDIR" ]; then
    python3 - "$OBJDIR.tmp" "$OBJECTS" <<'PY'
import math, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random("bucket-compare")
for i in range(n):
    r = rng.random()
    lo, hi = (100, 16 << 10) if r < 0.70 else ((16 << 10, 256 << 10) if r < 0.98 else (1 << 20, 4 << 20))
    size = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    path = os.path.join(root, f"d{i % 50:02}", f"s{i % 7}", f"obj-{i:06}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))
PY
    mv "$OBJDIR.tmp" "$OBJDIR"
fi
BYTES=$(du -sb "$OBJDIR" | cut -f1)
export RCLONE_CONFIG="$WORKDIR/rclone.conf" RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    RCLONE_CONFIG_BENCH_ENDPOINT="$AWS_ENDPOINT_URL" RCLONE_CONFIG_BENCH_REGION="$AWS_REGION"
touch "$RCLONE_CONFIG"
# rclone's S3 client refuses a custom CA bundle with its own transport; the
# server is plain HTTP on loopback anyway.
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }
rclone copy --transfers 16 "$OBJDIR" bench:bench >&2

export CAIRN_PASSWORD=bench
seconds() {
    local s; s=$(date +%s.%N)
    "$@" >/dev/null 2>"$WORKDIR/last.err" || { cat "$WORKDIR/last.err" >&2; exit 1; }
    printf "%.2f" "$(echo "$(date +%s.%N) - $s" | bc)"
}
cairn() { local name=$1; shift; CAIRN_CACHE_DIR="$WORKDIR/cache-$name" "$CAIRN" -q -r "$WORKDIR/repo-$name" "$@"; }
for name in direct copy; do cairn "$name" init --kdf-memory 8MiB --kdf-iterations 1 >/dev/null; done

rss_kib() { grep 'Maximum resident' "$1" | awk '{print $NF}'; }
direct_first=$(seconds /usr/bin/time -v -o "$WORKDIR/direct.time" \
    env CAIRN_CACHE_DIR="$WORKDIR/cache-direct" "$CAIRN" -q -r "$WORKDIR/repo-direct" backup s3:bench)
direct_again=$(seconds cairn direct backup s3:bench)
sync_first=$(seconds rclone sync --transfers 16 --checkers 16 bench:bench "$WORKDIR/copy")
copy_first=$(seconds cairn copy backup "$WORKDIR/copy")
sync_again=$(seconds rclone sync --transfers 16 --checkers 16 bench:bench "$WORKDIR/copy")
copy_again=$(seconds cairn copy backup "$WORKDIR/copy")

calc() { printf "%.2f" "$(echo "scale=4; $1" | bc)"; }
two_first=$(calc "$sync_first + $copy_first")
two_again=$(calc "$sync_again + $copy_again")
ratio_first=$(calc "$direct_first / $two_first")
ratio_again=$(calc "$direct_again / $two_again")
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB;" \
    "SeaweedFS $(weed_bin=${S3_BIN:-weed}; "$weed_bin" version 2>/dev/null | awk '{print $3}') on loopback; $(rclone version | head -1);" \
    "$OBJECTS objects, $((BYTES / 1000000)) MB"
echo
echo "| run | cairn direct s | rclone sync s | cairn backup of the copy s | two steps s | direct / two steps |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
echo "| first | $direct_first | $sync_first | $copy_first | $two_first | **$ratio_first** |"
echo "| unchanged | $direct_again | $sync_again | $copy_again | $two_again | **$ratio_again** |"
echo
echo "cairn direct, first run: peak RSS $(( $(rss_kib "$WORKDIR/direct.time") / 1024 )) MiB; local disk used by the two steps' copy: $(( $(du -sb "$WORKDIR/copy" | cut -f1) / 1000000 )) MB (direct: none)"
