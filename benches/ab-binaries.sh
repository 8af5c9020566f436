#!/usr/bin/env bash
# A/B of two cairn builds on the same corpus, in one run, interleaved (so
# machine noise hits both alike): first backup, unchanged rerun, restore;
# wall, user and system seconds and peak RSS (KB) from /usr/bin/time.
#
#   benches/ab-binaries.sh WORKDIR        # WORKDIR holds cairn-base, cairn-new and mixed/
#
# Make the corpus with `python3 benches/corpus.py gen mixed WORKDIR/mixed --scale 0.5`.
# Issue 10's numbers (before/after the snapshot session) came from this.
set -euo pipefail
cd "${1:?usage: benches/ab-binaries.sh WORKDIR}"
export CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$PWD/cache"
for round in 1 2 3; do
  for bin in base new; do
    rm -rf repo-$bin restore-$bin cache
    ./cairn-$bin -q -r repo-$bin init --kdf-memory 8MiB --kdf-iterations 1 >/dev/null
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    # warm the corpus in the page cache (both binaries read it warm)
    cat mixed/*/* mixed/* 2>/dev/null > /dev/null || true
    b=$( { /usr/bin/time -f "%e %U %S %M" ./cairn-$bin -q -r repo-$bin backup mixed >/dev/null; } 2>&1 | tail -1)
    r=$( { /usr/bin/time -f "%e %U %S %M" ./cairn-$bin -q -r repo-$bin backup mixed >/dev/null; } 2>&1 | tail -1)
    s=$( { /usr/bin/time -f "%e %U %S %M" ./cairn-$bin -q -r repo-$bin restore latest --target restore-$bin >/dev/null; } 2>&1 | tail -1)
    size=$(du -sb repo-$bin | cut -f1)
    echo "round $round $bin backup[$b] rerun[$r] restore[$s] repo=$size"
  done
done
rm -rf repo-base repo-new restore-base restore-new cache
