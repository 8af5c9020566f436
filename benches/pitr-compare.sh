#!/usr/bin/env bash
# benches/pitr-compare.sh: cairn's point-in-time recovery (pg wal-push,
# pg base-backup, pg restore --to-latest) next to pgBackRest on the same
# cluster in one run, and cairn's physical restore next to its logical one.
#
#   benches/pitr-compare.sh [--scale S] [--block-sizes "16KiB 8KiB 64KiB"] [--workdir DIR] [--no-pgbackrest]
#                           [--secondary-index]
#
# --scale 1 is the brief's database: 4,000,000 rows of random text with a
# primary key (~540 MB of tables). Day 2 updates 0.2 % of the rows at random
# (scattered single-row updates), appends 0.5 %, then VACUUMs. archive_command
# pushes every segment to both tools. Prints a Markdown table: base backup
# time, stored size on day 1 and added on day 2 (per cairn block size and for
# pgBackRest's incremental backup), restore-to-ready time, and the logical
# backup's restore time. It also prints where day 2's new bytes are: every
# 8 KiB page of the data directory is hashed at each day's base backup, and
# the pages (and blocks of the first block size) that day 1 did not have are
# summed per kind of file (table, index, free space map, visibility map,
# pg_xact, other), with the pages whose LSN did not move (hint bits only,
# not WAL-logged). --secondary-index adds an index on the text column (the
# logical restore must build it, the physical one copies it). Needs
# PostgreSQL 15 (apt) and runs as root: the server, archive_command and both
# tools run as the `postgres` OS user.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCALE=1
BLOCKS="16KiB 8KiB 64KiB"
WORKDIR=/tmp/pitr-compare
PGBR=1
SECONDARY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) SCALE=$2; shift 2 ;;
        --block-sizes) BLOCKS=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --no-pgbackrest) PGBR=0; shift ;;
        --secondary-index) SECONDARY=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [ "$PGBR" = 1 ] && ! command -v pgbackrest >/dev/null 2>&1; then
    echo "pgbackrest is not installed (apt-get install -y pgbackrest); running without it" >&2
    PGBR=0
fi
say() { printf '== %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }
du_bytes() { du -sb "$1" | cut -f1; }
as_pg() { runuser -u postgres -- "$@"; }

if [ -z "${CAIRN:-}" ]; then
    cargo build --release -p cairn --manifest-path "$ROOT/Cargo.toml" >&2
    CAIRN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn"
fi

rm -rf "$WORKDIR" && mkdir -p "$WORKDIR" && chmod 755 "$WORKDIR"
cp "$CAIRN" "$WORKDIR/cairn" && CAIRN=$WORKDIR/cairn
PGDIR=$WORKDIR/pg
mkdir -p "$PGDIR"
PORT=$((27000 + $$ % 2000))
first_block=${BLOCKS%% *}
cairn_at() { echo "$CAIRN -r $WORKDIR/cairn-$1 --password-file $WORKDIR/pw-$1 --cache-dir $WORKDIR/cache-$1"; }
ARCHIVE="$(cairn_at "$first_block") pg wal-push %p"
for b in ${BLOCKS#"$first_block"}; do ARCHIVE="$ARCHIVE && $(cairn_at "$b") pg wal-push %p"; done
CONF=$WORKDIR/pgbackrest.conf
if [ "$PGBR" = 1 ]; then
    ARCHIVE="$ARCHIVE && pgbackrest --config=$CONF --stanza=bench archive-push %p"
    cat >"$CONF" <<EOF2
[global]
repo1-path=$WORKDIR/pgbr
repo1-retention-full=2
log-path=$WORKDIR/pgbr-log
lock-path=$WORKDIR/pgbr-lock
spool-path=$WORKDIR/pgbr-spool
start-fast=y
compress-type=zst
process-max=2
log-level-console=warn

[bench]
pg1-path=$PGDIR/data
pg1-port=$PORT
pg1-socket-path=$PGDIR
EOF2
fi
chown -R postgres "$WORKDIR"
# synchronous_commit on: with it off (the test cluster's default), VACUUM right
# after the bulk load cannot set hint bits (the commit is not flushed yet),
# and day 2's VACUUM then rewrites most pages once, which no real day does.
PG_EXTRA="wal_level = replica
synchronous_commit = on
full_page_writes = on
archive_mode = on
archive_command = '$ARCHIVE'
max_wal_size = 4GB" bash "$ROOT/scripts/start-postgres.sh" "$PGDIR" "$PORT" >/dev/null
trap 'bash "$ROOT/scripts/stop-postgres.sh" --rm "$PGDIR" >/dev/null 2>&1 || true' EXIT
export PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
createdb bench
# Generated passwords, as the README sets up servers: their keys open without
# Argon2id, which every archive_command and restore_command run would pay.
for b in $BLOCKS; do
    "$CAIRN" -r "$WORKDIR/cairn-$b" --cache-dir "$WORKDIR/cache-$b" init --generate-password "$WORKDIR/pw-$b" >/dev/null
    chown -R postgres "$WORKDIR/cairn-$b" "$WORKDIR/cache-$b" "$WORKDIR/pw-$b"
done
[ "$PGBR" = 1 ] && as_pg pgbackrest --config="$CONF" --stanza=bench stanza-create >&2

N=$(python3 -c "print(int(4_000_000 * $SCALE))")
say "generating $N rows"
t0=$(now)
psql -X -q -v ON_ERROR_STOP=1 <<SQL
SELECT setseed(0.42) \\g /dev/null
CREATE TABLE t (id integer PRIMARY KEY, body text);
INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text) || md5(random()::text) FROM generate_series(1, $N) g;
VACUUM ANALYZE;
SQL
[ "$SECONDARY" = 1 ] && psql -X -q -v ON_ERROR_STOP=1 -c "CREATE INDEX t_body ON t (body)"
say "generated in $(elapsed "$t0" "$(now)") s: $(psql -X -At -c "SELECT pg_size_pretty(pg_database_size('bench'))")"
switch() { psql -X -qAt -c "SELECT pg_switch_wal()" >/dev/null; }

# Page maps for the day-2 breakdown: per file of the data directory (what a
# base backup reads), each 8 KiB page's hash and LSN (its first 8 bytes).
pagemap() { # $1 = output file
    local rels
    rels=$(psql -X -At -F ' ' -c "SELECT pg_relation_filepath(oid), relkind FROM pg_class
        WHERE pg_relation_filepath(oid) IS NOT NULL")
    REL_KINDS="$rels" python3 - "$PGDIR/data" "$1" <<'PY'
import hashlib, json, os, sys
root, out = sys.argv[1], sys.argv[2]
skip = {"pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"}
pages = {}
for dirpath, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(dirpath, d), root) not in skip and not d.startswith("pgsql_tmp")]
    for name in files:
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        pages[rel] = [(hashlib.blake2b(data[i:i + 8192], digest_size=12).hexdigest(), data[i:i + 8].hex())
                      for i in range(0, len(data), 8192)]
kinds = dict(line.split(" ", 1) for line in os.environ["REL_KINDS"].splitlines() if " " in line)
json.dump({"pages": pages, "kinds": kinds}, open(out, "w"))
PY
}
breakdown() { # $1 $2 = day-1 and day-2 page maps, $3 = block size in bytes
    python3 - "$1" "$2" "$3" <<'PY'
import json, re, sys
one, two, block = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
kinds = {**one["kinds"], **two["kinds"]}
def kind(rel):
    if rel.startswith("pg_xact/"):
        return "pg_xact"
    m = re.match(r"^(base/\d+/\d+|global/\d+)(_(fsm|vm|init))?(\.\d+)?$", rel)
    if not m:
        return "other files"
    if m.group(3) in ("fsm", "vm"):
        return {"fsm": "free space maps", "vm": "visibility maps"}[m.group(3)]
    k = kinds.get(m.group(1))
    return {"r": "tables", "t": "TOAST tables", "m": "tables", "i": "indexes"}.get(k, "other relations")
per = block // 8192
old_pages = {h for pages in one["pages"].values() for h, _ in pages}
old_blocks = {tuple(h for h, _ in pages[i:i + per]) for pages in one["pages"].values() for i in range(0, len(pages), per)}
old_lsn = {rel: {i: lsn for i, (_, lsn) in enumerate(pages)} for rel, pages in one["pages"].items()}
old_hash = {rel: [h for h, _ in pages] for rel, pages in one["pages"].items()}
rows, tot = {}, [0, 0, 0, 0]
for rel, pages in two["pages"].items():
    r = rows.setdefault(kind(rel), [0, 0, 0, 0])
    for i, (h, lsn) in enumerate(pages):
        r[0] += 8192
        if h not in old_pages:
            r[1] += 8192
            # Same page, same LSN, other bytes: hint bits (not WAL-logged).
            if old_lsn.get(rel, {}).get(i) == lsn and i < len(old_hash.get(rel, [])):
                r[3] += 8192
    for i in range(0, len(pages), per):
        if tuple(h for h, _ in pages[i:i + per]) not in old_blocks:
            r[2] += 8192 * len(pages[i:i + per])
for r in rows.values():
    tot = [a + b for a, b in zip(tot, r)]
mib = lambda b: f"{b / 1048576:.1f}"
print(f"| day 2, by kind of file | size | new 8 KiB pages | new {block // 1024} KiB blocks | share of new blocks | hint-bit-only pages |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for k, r in sorted(rows.items(), key=lambda kv: -kv[1][2]):
    print(f"| {k} | {mib(r[0])} MiB | {mib(r[1])} MiB | {mib(r[2])} MiB | {100 * r[2] / max(tot[2], 1):.0f} % | {mib(r[3])} MiB |")
print(f"| all (raw, before compression) | {mib(tot[0])} MiB | {mib(tot[1])} MiB ({100 * tot[1] / max(tot[0], 1):.0f} %) | {mib(tot[2])} MiB ({100 * tot[2] / max(tot[0], 1):.0f} %) | | {mib(tot[3])} MiB |")
PY
}

declare -A DAY1 DAY2 TIME1 TIME2
base_backups() { # $1 = day
    psql -X -q -c CHECKPOINT
    pagemap "$WORKDIR/pages-$1.json"
    for b in $BLOCKS; do
        local t0 out
        t0=$(now)
        # What the base backup itself added (the repository also receives WAL meanwhile).
        out=$(as_pg $(cairn_at "$b") --json pg base-backup -d "host=$PGDIR port=$PORT user=postgres" --fast --block-size "$b")
        eval "TIME$1[cairn-$b]=$(elapsed "$t0" "$(now)")"
        eval "DAY$1[cairn-$b]=$(printf '%s\n' "$out" | python3 -c "import json,sys
print(next(v['bytes_added'] for v in map(json.loads, filter(str.strip, sys.stdin)) if v.get('message_type') == 'summary'))")"
    done
    if [ "$PGBR" = 1 ]; then
        local type=full before t0
        [ "$1" = 2 ] && type=incr
        before=$(du_bytes "$WORKDIR/pgbr/backup")
        t0=$(now)
        as_pg pgbackrest --config="$CONF" --stanza=bench --type=$type backup >&2
        eval "TIME$1[pgbackrest]=$(elapsed "$t0" "$(now)")"
        eval "DAY$1[pgbackrest]=$(( $(du_bytes "$WORKDIR/pgbr/backup") - before ))"
    fi
}
say "day 1 base backups"
base_backups 1
say "day 2: scattered single-row updates of 0.2 % of rows (one transaction each), 0.5 % appended, VACUUM"
python3 -c "
import random
random.seed(7)
for _ in range($N // 500):
    print(f\"UPDATE t SET body = md5(random()::text) || md5(random()::text) || md5(random()::text) WHERE id = {random.randint(1, $N)};\")
" | psql -X -q -v ON_ERROR_STOP=1 >/dev/null
psql -X -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series($N + 1, $N + $N / 200) g;
VACUUM;
SQL
say "day 2 base backups"
base_backups 2
psql -X -q -c "INSERT INTO t VALUES ($N + $N / 200 + 1, 'last')"
switch
seg=$(psql -X -At -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
until [ "$(psql -X -At -c "SELECT coalesce(last_archived_wal >= '$seg', false) FROM pg_stat_archiver")" = t ]; do
    switch; sleep 0.5
done
ROWS=$(psql -X -At -c "SELECT count(*) FROM t")

wait_ready() { # $1 = data dir; waits for promotion, prints seconds since $2
    # The restored pg_control says "in production" from the start: recovery
    # has ended once the server removed recovery.signal.
    until [ ! -e "$1/recovery.signal" ] &&
        [ "$("$PGBIN/pg_controldata" "$1" | sed -n 's/^Database cluster state: *//p')" = "in production" ]; do
        sleep 0.1
    done
    elapsed "$2" "$(now)"
}
say "restores"
RPORT=$((PORT + 1))
t0=$(now)
as_pg $(cairn_at "$first_block") pg restore --to-latest --target-dir "$WORKDIR/r-cairn" --port "$RPORT" --start >&2
# (its output, above, splits the time into restoring files and recovery)
CAIRN_RESTORE=$(elapsed "$t0" "$(now)")
[ "$(psql -X -At -h "$WORKDIR/r-cairn" -p "$RPORT" -c "SELECT count(*) FROM t")" = "$ROWS" ] || { echo "cairn restore lost rows" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$WORKDIR/r-cairn" stop -m fast -w >/dev/null
PGBR_RESTORE=n/a
if [ "$PGBR" = 1 ]; then
    mkdir -m 700 "$WORKDIR/r-pgbr" && chown postgres "$WORKDIR/r-pgbr"
    t0=$(now)
    as_pg pgbackrest --config="$CONF" --stanza=bench --pg1-path="$WORKDIR/r-pgbr" --archive-mode=off \
        --type=default restore >&2
    as_pg "$PGBIN/pg_ctl" -D "$WORKDIR/r-pgbr" -l "$WORKDIR/r-pgbr.log" \
        -o "-p $((RPORT + 1)) -c unix_socket_directories='$WORKDIR/r-pgbr'" start -W >/dev/null
    PGBR_RESTORE=$(wait_ready "$WORKDIR/r-pgbr" "$t0")
    [ "$(psql -X -At -h "$WORKDIR/r-pgbr" -p $((RPORT + 1)) -c "SELECT count(*) FROM t")" = "$ROWS" ] || { echo "pgBackRest restore lost rows" >&2; exit 1; }
    as_pg "$PGBIN/pg_ctl" -D "$WORKDIR/r-pgbr" stop -m fast -w >/dev/null
fi
say "logical backup and restore of the same database"
as_pg $(cairn_at "$first_block") pg backup -d "host=$PGDIR port=$PORT user=postgres dbname=bench" --jobs 2 >&2
t0=$(now)
as_pg $(cairn_at "$first_block") pg restore -d "host=$PGDIR port=$PORT user=postgres dbname=bench_logical" --create --jobs 2 >&2
LOGICAL_RESTORE=$(elapsed "$t0" "$(now)")

echo
echo "| $(python3 -c "print(f'{$SCALE * 4_000_000:,.0f}')") rows, $(psql -X -At -c "SELECT pg_size_pretty(pg_database_size('bench'))") | base backup day 1 | stored day 1 | base backup day 2 | added day 2 | day 2 / day 1 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for k in $(for b in $BLOCKS; do echo "cairn-$b"; done) $([ "$PGBR" = 1 ] && echo pgbackrest); do
    echo "| $k | ${TIME1[$k]} s | $(mib "${DAY1[$k]}") MiB | ${TIME2[$k]} s | $(mib "${DAY2[$k]}") MiB | $(python3 -c "print(f'{100 * ${DAY2[$k]} / ${DAY1[$k]}:.0f} %')") |"
done
echo
echo "| restore of the whole cluster to ready ($ROWS rows) | seconds |"
echo "| --- | ---: |"
echo "| cairn pg restore --to-latest --start (physical: files, then recovery through wal-get) | $CAIRN_RESTORE |"
echo "| pgbackrest restore + recovery to promotion | $PGBR_RESTORE |"
echo "| cairn pg restore (logical, --jobs 2) of the database | $LOGICAL_RESTORE |"
echo "| physical / logical speed-up | $(python3 -c "print(f'{$LOGICAL_RESTORE / $CAIRN_RESTORE:.1f}x')") |"
echo
bytes_of() { python3 -c "import re,sys; v,u=re.match(r'([0-9.]+)(\D*)', sys.argv[1]).groups(); print(int(float(v)*{'':1,'KiB':1024,'MiB':1<<20}[u]))" "$1"; }
breakdown "$WORKDIR/pages-1.json" "$WORKDIR/pages-2.json" "$(bytes_of "$first_block")"
echo
echo "(cairn's day 2 / day 1 above is of stored bytes: compressed blocks plus trees, index and pack framing.)"
