#!/usr/bin/env bash
# benches/pg-compare.sh: cairn pg backup/restore against pg_dump -Fc /
# pg_restore -j and pg_dump | restic backup --stdin, on a generated database.
#
#   benches/pg-compare.sh [--scale S] [--jobs N] [--workdir DIR] [--install]
#
# --scale 1 builds about 1 GB of table data: `events` (append-only, JSON
# payloads), `accounts` (hot rows updated), `archive` (static), `notes` (no
# key, rows updated). Day 2 is an update+append+VACUUM day: append 2 % to
# events, update 1 % of accounts (the hottest 10 %) and of notes, VACUUM (as
# autovacuum would), then the same again, so later rows move into the holes.
# cairn backs up twice each day, into two repositories: heap order
# (`--row-order physical`, the default) and key order (`--row-order key`).
# Prints a Markdown table: times, bytes stored on day 1 and added on day 2,
# and the ratios of key order to heap order and to restic.
# CAIRN_BIN=path uses that cairn instead of building a release one (into
# $CARGO_TARGET_DIR, else target/).
# Needs PostgreSQL (scripts/start-postgres.sh starts a throwaway cluster);
# restic is used when installed (--install apt-installs it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCALE=1
JOBS=2
WORKDIR="$ROOT/target/pg-compare"
INSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) SCALE=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --install) INSTALL=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if [ "$INSTALL" = 1 ] && ! command -v restic >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic </dev/null
fi
say() { printf '== %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
du_bytes() { du -sb "$1" | cut -f1; }

if [ -n "${CAIRN_BIN:-}" ]; then
    CAIRN=$CAIRN_BIN
else
    cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml" >&2
    CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
fi

rm -rf "$WORKDIR" && mkdir -p "$WORKDIR"
PGDIR=$(mktemp -d /tmp/pgb-XXXX)
chmod 755 "$PGDIR"
PORT=$((27000 + $$ % 2000))
bash "$ROOT/scripts/start-postgres.sh" "$PGDIR" "$PORT" >/dev/null
trap 'bash "$ROOT/scripts/stop-postgres.sh" --rm "$PGDIR" >/dev/null 2>&1 || true' EXIT
export PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
unset PGPASSWORD
createdb bench

N_EVENTS=$(python3 -c "print(int(2_000_000 * $SCALE))")
N_ACCOUNTS=$(python3 -c "print(int(1_000_000 * $SCALE))")
N_ARCHIVE=$(python3 -c "print(int(2_000_000 * $SCALE))")
say "generating: $N_EVENTS events, $N_ACCOUNTS accounts, $N_ARCHIVE archive rows"
t0=$(now)
psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT setseed(0.42) \\g /dev/null
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text, payload jsonb);
INSERT INTO events (at, kind, payload)
  SELECT timestamptz '2025-01-01' + g * interval '10 ms', (ARRAY['click','view','buy','login'])[1 + g % 4],
         jsonb_build_object('user', (random() * 1e6)::int, 'session', md5(random()::text),
                            'path', '/p/' || (random() * 1e4)::int, 'ms', (random() * 900)::int,
                            'agent', substr(md5(g::text), 1, 12), 'score', random())
  FROM generate_series(1, $N_EVENTS) g;
CREATE INDEX events_at ON events (at);
CREATE TABLE accounts (id integer PRIMARY KEY, name text, balance numeric(14,2), updated timestamptz);
INSERT INTO accounts SELECT g, 'user ' || md5(g::text), round((random() * 1e5)::numeric, 2), now() FROM generate_series(1, $N_ACCOUNTS) g;
CREATE TABLE archive (id integer PRIMARY KEY, body text);
INSERT INTO archive SELECT g, md5(random()::text) || ' ' || md5(random()::text) || ' ' || repeat(chr(97 + g % 26), 40) FROM generate_series(1, $N_ARCHIVE) g;
CREATE TABLE notes (ref integer, note text, touched timestamptz);
INSERT INTO notes SELECT g, 'note ' || md5(g::text) || ' ' || repeat('n', 30), now() FROM generate_series(1, $N_ACCOUNTS / 2) g;
VACUUM ANALYZE;
SQL
say "generated in $(elapsed "$t0" "$(now)") s; $(psql -X -At -c "SELECT pg_size_pretty(sum(pg_relation_size(oid))) FROM pg_class WHERE relname IN ('events','accounts','archive','notes')") of tables"

export CAIRN_PASSWORD=pg-compare-benchmark
REPO="$WORKDIR/cairn-repo"
KEYREPO="$WORKDIR/cairn-repo-key"
"$CAIRN" -r "$REPO" init >/dev/null
"$CAIRN" -r "$KEYREPO" init >/dev/null
HAVE_RESTIC=0
if command -v restic >/dev/null 2>&1; then
    HAVE_RESTIC=1
    export RESTIC_PASSWORD=pg-compare-benchmark RESTIC_REPOSITORY="$WORKDIR/restic-repo"
    restic init -q >/dev/null
fi

declare -A R
cairn_backup() { # day [label repo order]
    local t0 out label=${2:-cairn} repo=${3:-$REPO} order=${4:-physical}
    t0=$(now)
    out=$("$CAIRN" -r "$repo" --json pg backup -d bench --jobs "$JOBS" --row-order "$order" | grep '"summary"')
    R[${label}_backup_$1]=$(elapsed "$t0" "$(now)")
    R[${label}_added_$1]=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['bytes_added'])" "$out")
}
pgdump_backup() {
    local t0
    t0=$(now)
    pg_dump -Fc -f "$WORKDIR/day$1.dump" bench
    R[pgdump_backup_$1]=$(elapsed "$t0" "$(now)")
    R[pgdump_added_$1]=$(stat -c %s "$WORKDIR/day$1.dump")
}
restic_backup() {
    [ "$HAVE_RESTIC" = 1 ] || return 0
    local t0 before
    before=$(du_bytes "$RESTIC_REPOSITORY")
    t0=$(now)
    pg_dump -Fp bench | restic backup -q --stdin --stdin-filename bench.sql >/dev/null
    R[restic_backup_$1]=$(elapsed "$t0" "$(now)")
    R[restic_added_$1]=$(( $(du_bytes "$RESTIC_REPOSITORY") - before ))
}

for day in 1 2; do
    if [ "$day" = 2 ]; then
        say "day 2: twice (+1% events, 0.5% of accounts and of notes updated), VACUUM between"
        for round in 1 2; do
            psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT setseed(0.$((6 + round))) \\g /dev/null
INSERT INTO events (at, kind, payload)
  SELECT now() + g * interval '10 ms', 'view', jsonb_build_object('user', (random() * 1e6)::int, 'session', md5(random()::text), 'score', random())
  FROM generate_series(1, $N_EVENTS / 100) g;
UPDATE accounts SET balance = balance + 1, updated = now()
  WHERE id IN (SELECT (random() * ($N_ACCOUNTS / 10))::int + 1 FROM generate_series(1, $N_ACCOUNTS / 200));
UPDATE notes SET touched = now()
  WHERE ref IN (SELECT (random() * ($N_ACCOUNTS / 2))::int + 1 FROM generate_series(1, $N_ACCOUNTS / 400));
VACUUM;
SQL
        done
    fi
    sync; say "day $day: cairn pg backup (heap order)"; cairn_backup "$day"
    sync; say "day $day: cairn pg backup --row-order key"; cairn_backup "$day" cairnkey "$KEYREPO" key
    sync; say "day $day: pg_dump -Fc"; pgdump_backup "$day"
    sync; say "day $day: pg_dump | restic"; restic_backup "$day"
done

say "restore: cairn pg restore -j $JOBS"
t0=$(now)
"$CAIRN" -r "$REPO" -q pg restore -d cairn_restored --create --jobs "$JOBS"
R[cairn_restore]=$(elapsed "$t0" "$(now)")
R[cairn_restore_phases]=$("$CAIRN" -r "$REPO" --json pg restore -d cairn_restored2 --create --jobs "$JOBS" | grep '"summary"' | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); p=d['phase_secs']; print(f\"second run {d['duration_secs']:.2f} s: schema {p['pre_data']:.2f}, data {p['data']:.2f}, post-data+ANALYZE {p['post_data']:.2f}\")")
say "restore: pg_restore -j $JOBS"
createdb pgrestore_restored
t0=$(now)
pg_restore -j "$JOBS" -d pgrestore_restored "$WORKDIR/day2.dump"
# cairn's restore ends with ANALYZE (and creates the database): so does this.
psql -X -q -c "ANALYZE" pgrestore_restored
R[pgdump_restore]=$(elapsed "$t0" "$(now)")

strip() { grep -v '^\\\(un\)\?restrict' | sed 's/^-- Dumped.*//'; }
if diff <(pg_dump bench | strip) <(pg_dump cairn_restored | strip) >/dev/null; then same=yes; else same=NO; fi

mb() { python3 -c "print(f'{$1 / 1e6:,.1f}')"; }
pct() { python3 -c "print(f'{100 * $1 / $2:.1f} %')"; }
echo
echo "scale $SCALE, jobs $JOBS, $(nproc) cores; cairn restore identical to source by pg_dump: $same"
echo "cairn restore ${R[cairn_restore_phases]}"
echo
echo "| | day 1 backup s | day 1 stored MB | day 2 backup s | day 2 added MB | day 2 / day 1 | restore s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
echo "| cairn pg | ${R[cairn_backup_1]} | $(mb "${R[cairn_added_1]}") | ${R[cairn_backup_2]} | $(mb "${R[cairn_added_2]}") | $(pct "${R[cairn_added_2]}" "${R[cairn_added_1]}") | ${R[cairn_restore]} |"
echo "| cairn pg --row-order key | ${R[cairnkey_backup_1]} | $(mb "${R[cairnkey_added_1]}") | ${R[cairnkey_backup_2]} | $(mb "${R[cairnkey_added_2]}") | $(pct "${R[cairnkey_added_2]}" "${R[cairnkey_added_1]}") | |"
echo "| pg_dump -Fc / pg_restore -j $JOBS | ${R[pgdump_backup_1]} | $(mb "${R[pgdump_added_1]}") | ${R[pgdump_backup_2]} | $(mb "${R[pgdump_added_2]}") | $(pct "${R[pgdump_added_2]}" "${R[pgdump_added_1]}") | ${R[pgdump_restore]} |"
if [ "$HAVE_RESTIC" = 1 ]; then
    echo "| pg_dump -Fp \\| restic --stdin | ${R[restic_backup_1]} | $(mb "${R[restic_added_1]}") | ${R[restic_backup_2]} | $(mb "${R[restic_added_2]}") | $(pct "${R[restic_added_2]}" "${R[restic_added_1]}") | |"
fi
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo
echo "key order ÷ heap order: day 2 added $(ratio "${R[cairnkey_added_2]}" "${R[cairn_added_2]}")×, backup time day 1 $(ratio "${R[cairnkey_backup_1]}" "${R[cairn_backup_1]}")×, day 2 $(ratio "${R[cairnkey_backup_2]}" "${R[cairn_backup_2]}")×"
if [ "$HAVE_RESTIC" = 1 ]; then
    echo "day 2 added ÷ restic-over-pg_dump: heap order $(ratio "${R[cairn_added_2]}" "${R[restic_added_2]}")×, key order $(ratio "${R[cairnkey_added_2]}" "${R[restic_added_2]}")× (target ≤ 0.5×)"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
