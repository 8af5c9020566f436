#!/usr/bin/env bash
# benches/pitr-wal.sh: WAL archiving through `cairn pg wal-push` on a
# throwaway PostgreSQL cluster, into a local repository.
#
#   benches/pitr-wal.sh [--cairn BIN] [--backlog N] [--load-secs S] [--timeout T] [--rpo-secs S]
#
# 1. Backlog drain: N segments written while archive_command is empty (so they
#    wait as .ready files), then archive_command is set; prints segments/s.
#    The WAL is pgbench's initialization (COPY of its tables, index builds),
#    repeated until N segments wait.
# 2. Sustained: pgbench's initialization, repeated for S seconds while
#    archiving runs (a bulk load writes WAL as fast as this machine can);
#    prints the segments written and archived per second, the backlog left,
#    and where the pusher's time went (its log line at exit).
# 3. RPO: light steady writes (pgbench -R 20) with archive_timeout = T for
#    S seconds; samples `cairn pg pitr-status` and prints the RPO (now minus
#    the last push) seen: median and max, against T + 10 s.
# Without --cairn it builds the `bench` profile (release without LTO).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CAIRN=""
BACKLOG=64
LOAD_SECS=60
TIMEOUT=10
RPO_SECS=60
while [ $# -gt 0 ]; do
    case "$1" in
        --cairn) CAIRN=$2; shift 2 ;;
        --backlog) BACKLOG=$2; shift 2 ;;
        --load-secs) LOAD_SECS=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --rpo-secs) RPO_SECS=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
say() { printf '== %s\n' "$*" >&2; }
now() { date +%s.%N; }

if [ -z "$CAIRN" ]; then
    cargo build --profile bench -p cairn --manifest-path "$ROOT/Cargo.toml" >&2
    CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
    [ -x "$CAIRN" ] || CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/bench/cairn"
fi
PGBIN=${PGBIN:-$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

WORK=$(mktemp -d /tmp/pitrb-XXXX)
chmod 777 "$WORK"
PGDIR="$WORK/pg"
PORT=$((28000 + $$ % 2000))
trap 'bash "$ROOT/scripts/stop-postgres.sh" --rm "$PGDIR" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
echo "correct horse" >"$WORK/pw"
"$CAIRN" -r "$WORK/repo" --password-file "$WORK/pw" init >/dev/null
PG_EXTRA="wal_level = replica
full_page_writes = on
archive_mode = on
archive_command = ''
max_wal_size = 4GB" bash "$ROOT/scripts/start-postgres.sh" "$PGDIR" "$PORT" >/dev/null 2>&1
chown -R "$(stat -c %U "$PGDIR/data")" "$WORK"
export PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
q() { "$PGBIN/psql" -X -qAt -c "$1"; }
PUSH="$CAIRN -r $WORK/repo --password-file $WORK/pw --cache-dir $WORK/cache pg wal-push %p"
archived() { q "select archived_count from pg_stat_archiver"; }
ready() { ls "$PGDIR/data/pg_wal/archive_status" | grep -c '\.ready$' || true; }

say "pgbench -i -s 20"
"$PGBIN/pgbench" -q -i -s 20 >/dev/null 2>&1

# 1. A backlog of .ready segments, then archiving switched on.
say "writing a backlog of $BACKLOG segments (archive_command empty)"
while [ "$(ready)" -lt "$BACKLOG" ]; do "$PGBIN/pgbench" -q -i -s 20 >/dev/null 2>&1; done
q "select pg_switch_wal()" >/dev/null
N=$(ready)
A0=$(archived)
q "alter system set archive_command = '$PUSH'"
t0=$(now)
q "select pg_reload_conf()" >/dev/null
while [ "$(ready)" -gt 0 ]; do sleep 0.1; done
t1=$(now)
A1=$(archived)
DRAIN=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
DRAIN_RATE=$(python3 -c "print(f'{($A1 - $A0) / ($t1 - $t0):.1f}')")
say "drained $((A1 - A0)) of $N segments in $DRAIN s"

# 2. Sustained: writes and archiving together.
say "pgbench -i -s 20 repeated for $LOAD_SECS s with archiving on"
A0=$(archived)
LSN0=$(q "select pg_current_wal_lsn()")
t0=$(now)
end=$(( $(date +%s) + LOAD_SECS ))
LOADS=0
while [ "$(date +%s)" -lt "$end" ]; do
    "$PGBIN/pgbench" -q -i -s 20 >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log" >&2; exit 1; }
    LOADS=$((LOADS + 1))
done
t1=$(now)
LSN1=$(q "select pg_current_wal_lsn()")
A1=$(archived)
WRITTEN=$(q "select round(pg_wal_lsn_diff('$LSN1', '$LSN0') / 16777216.0, 1)")
LEFT=$(ready)
SUST_W=$(python3 -c "print(f'{$WRITTEN / ($t1 - $t0):.1f}')")
SUST_A=$(python3 -c "print(f'{($A1 - $A0) / ($t1 - $t0):.1f}')")
t2=$(now)
while [ "$(ready)" -gt 0 ]; do sleep 0.2; done
CATCHUP=$(python3 -c "print(f'{$(now) - $t2:.1f}')")
# The pusher writes where its time went when it exits (after 30 s idle).
say "waiting for the pusher to exit"
sleep 33

# 3. RPO with archive_timeout under light steady writes.
say "RPO: archive_timeout = $TIMEOUT s, pgbench -R 20 for $RPO_SECS s"
q "alter system set archive_timeout = '${TIMEOUT}s'" >/dev/null
q "select pg_reload_conf()" >/dev/null
"$PGBIN/pgbench" -n -c 1 -R 20 -T "$((RPO_SECS + 5))" >/dev/null 2>&1 &
BENCH=$!
sleep 5
SAMPLES=()
end=$(( $(date +%s) + RPO_SECS ))
while [ "$(date +%s)" -lt "$end" ]; do
    r=$("$CAIRN" -r "$WORK/repo" --password-file "$WORK/pw" --cache-dir "$WORK/cache-status" --json pg pitr-status \
        | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['rpo_seconds'])")
    SAMPLES+=("$r")
    sleep 2
done
wait $BENCH 2>/dev/null || true
RPO=$(printf "%s\n" "${SAMPLES[@]}" | python3 -c "
import sys, statistics
v = [int(x) for x in sys.stdin.read().split()]
print(f'{statistics.median(v):.0f} {max(v)} {len(v)}')")
read -r RPO_MED RPO_MAX RPO_N <<<"$RPO"
SEGS=$("$CAIRN" -r "$WORK/repo" --password-file "$WORK/pw" --cache-dir "$WORK/cache-status" --json pg pitr-status \
    | python3 -c "import json,sys; s=json.load(sys.stdin)[0]; print(s['files'], s['batches'], len(s['timelines'][0]['gaps']))")
read -r FILES BATCHES GAPS <<<"$SEGS"
STORED=$(du -sb "$WORK/repo" | cut -f1)

echo
echo "| measurement | value |"
echo "| --- | ---: |"
echo "| backlog drain: segments (16 MiB) | $N |"
echo "| backlog drain: seconds | $DRAIN |"
echo "| backlog drain: segments/s | $DRAIN_RATE |"
echo "| sustained, $LOAD_SECS s of pgbench -i -s 20 ($LOADS loads): segments written/s | $SUST_W |"
echo "| sustained: segments archived/s | $SUST_A |"
echo "| sustained: .ready left at the end, seconds to archive them | $LEFT, $CATCHUP |"
echo "| RPO with archive_timeout = $TIMEOUT s: median / max (s, $RPO_N samples) | $RPO_MED / $RPO_MAX |"
echo "| RPO target (archive_timeout + 10 s) | $((TIMEOUT + 10)) |"
echo "| archived files / batch snapshots / gaps | $FILES / $BATCHES / $GAPS |"
echo "| repository bytes | $STORED |"
echo
echo "pusher log (where each pusher's time went):"
sed -n 's/^.*idle, exiting: /  /p' "$PGDIR/data/pg_wal/cairn_spool/pusher.log"
