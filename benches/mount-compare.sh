#!/usr/bin/env bash
# `cp` of a large file out of `cairn mount` against `cairn restore` of the
# same file, in one run, interleaved (three rounds; each mount is fresh, so
# the mount's page cache starts empty; the repository's files are warm in
# the page cache for both). Prints MB/s of each and the ratio.
#
#   benches/mount-compare.sh [WORKDIR] [SIZE_MB]     # needs /dev/fuse (root, or fuse3)
#
# Issue 13's target: the mount at >= 50% of restore's throughput.
set -euo pipefail
work=${1:-$(mktemp -d)}
size_mb=${2:-1024}
cd "$(dirname "$0")/.."
cargo build --release -q -p cairn
cairn=$PWD/target/release/cairn
mkdir -p "$work" && cd "$work"
export CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$PWD/cache" CAIRN_REPOSITORY="$PWD/repo"
rm -rf repo cache src mnt out restored && mkdir -p src mnt
head -c $((size_mb * 1024 * 1024)) /dev/urandom > src/big.bin
"$cairn" -q init --kdf-memory 8MiB --kdf-iterations 1 >/dev/null
"$cairn" -q backup src >/dev/null
cat repo/data/*/* > /dev/null
seconds() { local start end; start=$(date +%s.%N); "$@"; end=$(date +%s.%N); echo "$end - $start" | bc; }
for round in 1 2 3; do
  rm -rf restored
  r=$(seconds "$cairn" -q restore latest --target restored)
  "$cairn" -q mount mnt & pid=$!
  for _ in $(seq 100); do [ -e mnt/snapshots ] && break; sleep 0.1; done
  m=$(seconds cp mnt/snapshots/latest/big.bin out)
  kill -TERM $pid; wait $pid
  cmp -s out src/big.bin || { echo "the mount read wrong bytes" >&2; exit 1; }
  rm -f out
  printf 'round %d: restore %.0f MB/s, mount cp %.0f MB/s, mount/restore %.2f\n' "$round" \
    "$(echo "$size_mb / $r" | bc -l)" "$(echo "$size_mb / $m" | bc -l)" "$(echo "$r / $m" | bc -l)"
done
