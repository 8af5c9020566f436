#!/usr/bin/env bash
# benches/compare.sh: cairn against restic, borg, rustic and bupstash on the same
# deterministic corpora, in one run, with one table. See benches/README-compare.md.
#
#   benches/compare.sh [--workdir DIR] [--scale S] [--only mixed|smallfiles]
#                      [--tools cairn,restic,borg,rustic,bupstash] [--runs N]
#                      [--install] [--install-cargo-peers] [--gen-only] ...
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CORPUS_PY="$HERE/corpus.py"

WORKDIR="$ROOT/target/compare"
SCALE=1
SEED=1
ONLY=""
TOOLS="cairn,restic,borg,rustic,bupstash"
RUNS=1
INSTALL=0
INSTALL_CARGO=0
BUILD=1
GEN_ONLY=0
KEEP=0
REPORT_ONLY=""
STEP_TIMEOUT=7200
# borg's default is lz4; the peers were measured with zstd level 3 everywhere
# (see /work/shared/research/peers-measured.md: all repos within 0.2 % of each other),
# which is also what restic (auto), rustic, bupstash and cairn use by default.
BORG_COMPRESSION="zstd,3"
CAIRN_BIN="$ROOT/target/release/cairn"
PASSWORD="compare-benchmark-password"

usage() {
    cat <<EOF
Usage: benches/compare.sh [OPTIONS]

Backs up the same deterministic corpora with cairn and each installed peer
(restic, borg, rustic, bupstash), timing every step, and prints Markdown tables.

  --workdir DIR          corpora, repositories, logs and results.jsonl [target/compare]
  --scale S              corpus size factor (0.005 makes a ~10 MB smoke-test corpus) [1]
  --seed N               corpus seed [1]
  --only CORPUS          only 'mixed' (with its 'mutated' step) or 'smallfiles'
  --tools LIST           comma-separated subset of cairn,restic,borg,rustic,bupstash [all]
  --runs N               repeat every tool's sequence N times; tables show medians [1]
  --install              apt-get install restic, borgbackup, time, rsync if missing
  --install-cargo-peers  cargo install --locked rustic-rs / bupstash if missing
  --no-build             do not run 'cargo build --release -p cairn' if the binary is missing
  --cairn PATH           cairn binary [target/release/cairn]
  --borg-compression C   borg --compression value [zstd,3] (borg's own default: lz4)
  --step-timeout SECS    kill a step after SECS seconds (recorded as fail) [7200]
  --keep                 keep repositories and restored trees (default: delete after use)
  --gen-only             only generate the corpora
  --report RUN_ID|last   only print the tables of a previous run from results.jsonl
EOF
}

die() { echo "compare.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORKDIR=$2; shift ;;
        --scale) SCALE=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --tools) TOOLS=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        --install) INSTALL=1 ;;
        --install-cargo-peers) INSTALL_CARGO=1 ;;
        --no-build) BUILD=0 ;;
        --cairn) CAIRN_BIN=$2; shift ;;
        --borg-compression) BORG_COMPRESSION=$2; shift ;;
        --step-timeout) STEP_TIMEOUT=$2; shift ;;
        --keep) KEEP=1 ;;
        --gen-only) GEN_ONLY=1 ;;
        --report) REPORT_ONLY=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

case $ONLY in ""|mixed|smallfiles) ;; *) die "--only takes mixed or smallfiles" ;; esac
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive integer"
awk -v s="$SCALE" 'BEGIN { exit !(s > 0) }' || die "--scale takes a positive number"
CORPORA=()
[ "$ONLY" != smallfiles ] && CORPORA+=(mixed)
[ "$ONLY" != mixed ] && CORPORA+=(smallfiles)
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
for t in "${TOOL_LIST[@]}"; do
    case $t in cairn|restic|borg|rustic|bupstash) ;; *) die "unknown tool: $t" ;; esac
done
wants() { [[ ",$TOOLS," == *",$1,"* ]]; }

mkdir -p "$WORKDIR" || die "cannot create $WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
RESULTS="$WORKDIR/results.jsonl"
if awk -v s="$SCALE" 'BEGIN { exit !(s == 1) }'; then
    CORPUS_DIR="$WORKDIR/corpus"
else
    CORPUS_DIR="$WORKDIR/corpus-scale$SCALE"
fi
[ "$SEED" = 1 ] || CORPUS_DIR="$CORPUS_DIR-seed$SEED"
# the mixed corpus is backed up from here: first a copy of `mixed`, then rsync'ed to `mutated`
SRC_MIXED="$CORPUS_DIR/live/mixed"

# --------------------------------------------------------------------------
# report: Markdown tables from results.jsonl (medians over --runs)

report() {  # RUN_ID
    python3 - "$RESULTS" "$1" <<'PYEOF'
import json, statistics, sys

path, run_id = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
if run_id == "last":
    ids = [r["run_id"] for r in rows if r.get("type") == "machine"]
    if not ids:
        sys.exit("no runs in " + path)
    run_id = ids[-1]
rows = [r for r in rows if r.get("run_id") == run_id]
machine = next((r for r in rows if r.get("type") == "machine"), None)
steps = [r for r in rows if r.get("type") == "step"]
corpora = [r for r in rows if r.get("type") == "corpus"]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, nd=2):
    if x is None:
        return "fail"
    if isinstance(x, str):
        return x
    return f"{x:,.{nd}f}"

if machine:
    print(f"# cairn vs peers, run {run_id}\n")
    print(f"machine: {machine['cpu']}, {machine['nproc']} CPUs, {machine['mem_gib']} GiB RAM, "
          f"kernel {machine['kernel']}, {machine['fs']} at {machine['workdir']}; "
          f"load average at start {machine['load']}; scale {machine['scale']}, seed {machine['seed']}, "
          f"runs {machine['runs']}; borg --compression {machine['borg_compression']}\n")
    print("tools: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + "\n")

order = []
for s in steps:
    if s["tool"] not in order:
        order.append(s["tool"])

def get(corpus, tool, step, key, ok_only=True):
    vals = [s.get(key) for s in steps if s["corpus"] == corpus and s["tool"] == tool and s["step"] == step
            and (s["status"] == "ok" or not ok_only)]
    return vals

def stat(corpus, tool):
    d = {}
    for step in ("init", "backup_initial", "backup_unchanged", "backup_mutated", "restore"):
        d[step] = med(get(corpus, tool, step, "wall_s"))
        d[step + "_cpu"] = med(get(corpus, tool, step, "cpu_s"))
    d["repo"] = med(get(corpus, tool, "backup_initial", "repo_bytes"))
    reps = sorted({s["rep"] for s in steps if s["corpus"] == corpus and s["tool"] == tool})
    growth = []
    for rep in reps:
        by = {s["step"]: s for s in steps if s["corpus"] == corpus and s["tool"] == tool and s["rep"] == rep}
        a, b = by.get("backup_unchanged"), by.get("backup_mutated")
        if a and b and a["status"] == "ok" and b["status"] == "ok":
            growth.append(b["repo_bytes"] - a["repo_bytes"])
    d["growth"] = med(growth)
    mine = [s for s in steps if s["corpus"] == corpus and s["tool"] == tool]
    rss = [s["max_rss_kib"] for s in mine if s["status"] == "ok" and s.get("max_rss_kib")]
    d["rss"] = max(rss) / 1024 if rss else None
    d["all_ok"] = all(s["status"] == "ok" for s in mine)
    v = get(corpus, tool, "restore", "verified", ok_only=False)
    d["verified"] = ("ok" if v and all(x == "ok" for x in v) else
                     "FAIL (differs)" if any(x == "fail" for x in v) else "no restore")
    return d

for corpus in ("mixed", "smallfiles"):
    tools = [t for t in order if any(s["corpus"] == corpus and s["tool"] == t for s in steps)]
    if not tools:
        continue
    mutated = corpus == "mixed"
    info = {c["corpus"]: c for c in corpora}
    print(f"## {corpus}\n")
    if corpus in info:
        c = info[corpus]
        print(f"input: {c['bytes'] / 1e6:,.1f} MB in {c['files']:,} files, {c['dirs']:,} directories "
              f"({c.get('text_bytes', 0) / max(1, c['bytes']):.0%} text)")
    if mutated and "mutated" in info:
        c = info["mutated"]
        m = c["mutations"]
        print(f"mutated: {m['modified']['bytes'] / 1e6:.1f} MB overwritten in {m['modified']['files']} files, "
              f"{m['appended']['bytes'] / 1e6:.1f} MB appended to {m['appended']['files']}, "
              f"{m['new']['bytes'] / 1e6:.1f} MB in {m['new']['files']} new files, {m['deleted']['files']} deleted "
              f"({c['bytes'] / 1e6:,.1f} MB in {c['files']:,} files)")
    print()
    cols = ["tool", "init s", "first backup s", "first CPU s", "unchanged s"]
    if mutated:
        cols += ["mutated s"]
    cols += ["restore s", "repo MB"]
    if mutated:
        cols += ["growth MB"]
    cols += ["peak RSS MiB", "restore verified"]
    print("| " + " | ".join(cols) + " |")
    print("| --- | " + " | ".join("---:" for _ in cols[1:-1]) + " | --- |")
    stats = {t: stat(corpus, t) for t in tools}
    for t in tools:
        d = stats[t]
        cells = [t, fmt(d["init"]), fmt(d["backup_initial"]), fmt(d["backup_initial_cpu"]), fmt(d["backup_unchanged"])]
        if mutated:
            cells.append(fmt(d["backup_mutated"]))
        cells += [fmt(d["restore"]), fmt(d["repo"] / 1e6 if d["repo"] is not None else None, 1)]
        if mutated:
            cells.append(fmt(d["growth"] / 1e6 if d["growth"] is not None else None, 1))
        cells += [fmt(d["rss"], 0), d["verified"]]
        print("| " + " | ".join(cells) + " |")
    print()
    peers = [t for t in tools if t != "cairn"]
    if "cairn" in tools and peers:
        print(f"cairn / best peer ({corpus}; < 1 means cairn is faster or smaller):\n")
        print("| metric | cairn | best peer | ratio |")
        print("| --- | ---: | --- | ---: |")
        metrics = [("first backup s", "backup_initial", 2), ("first backup CPU s", "backup_initial_cpu", 2),
                   ("unchanged s", "backup_unchanged", 2), ("unchanged CPU s", "backup_unchanged_cpu", 2)]
        if mutated:
            metrics += [("mutated s", "backup_mutated", 2), ("mutated CPU s", "backup_mutated_cpu", 2)]
        metrics += [("restore s", "restore", 2), ("restore CPU s", "restore_cpu", 2), ("repo MB", "repo", 1)]
        if mutated:
            metrics += [("growth MB", "growth", 1)]
        metrics += [("peak RSS MiB", "rss", 0)]
        for label, key, nd in metrics:
            scale = 1e6 if key in ("repo", "growth") else 1
            c = stats["cairn"][key]
            if key == "rss" and not stats["cairn"]["all_ok"]:
                c = None  # a peak over the steps that worked would flatter cairn
            cand = [(stats[p][key], p) for p in peers if stats[p][key] is not None]
            if not cand:
                print(f"| {label} | {fmt(c if c is None else c / scale, nd)} | (no peer) | |")
                continue
            best, who = min(cand)
            ratio = "fail" if c is None else ("n/a" if best == 0 else f"{c / best:.2f}")
            print(f"| {label} | {fmt(None if c is None else c / scale, nd)} | {who} {fmt(best / scale, nd)} | {ratio} |")
        print()
fails = [s for s in steps if s["status"] != "ok"]
if fails:
    print("failed steps: " + ", ".join(f"{s['tool']}/{s['corpus']}/{s['step']} (rc {s['rc']}"
                                       + (", verify failed" if s.get("verified") == "fail" else "") + ")"
                                       for s in fails) + "\n")
    print(f"logs: {fails[0]['log'].rsplit('/', 1)[0]}\n")
PYEOF
}

if [ -n "$REPORT_ONLY" ]; then
    [ -f "$RESULTS" ] || die "no $RESULTS"
    report "$REPORT_ONLY"
    exit
fi

# --------------------------------------------------------------------------
# prerequisites

command -v python3 >/dev/null || die "python3 is needed (corpus generator and report)"

apt_missing=()
[ -x /usr/bin/time ] || apt_missing+=(time)
command -v rsync >/dev/null || apt_missing+=(rsync)
wants restic && ! command -v restic >/dev/null && apt_missing+=(restic)
wants borg && ! command -v borg >/dev/null && apt_missing+=(borgbackup)
if [ ${#apt_missing[@]} -gt 0 ] && [ $INSTALL = 1 ] && [ $GEN_ONLY = 0 ]; then
    echo "installing ${apt_missing[*]} (apt-get)"
    apt-get install -y "${apt_missing[@]}" || { apt-get update && apt-get install -y "${apt_missing[@]}"; } \
        || die "apt-get install ${apt_missing[*]} failed"
fi
if [ $INSTALL_CARGO = 1 ] && [ $GEN_ONLY = 0 ]; then
    if wants rustic && ! command -v rustic >/dev/null; then
        cargo install --locked rustic-rs || echo "compare.sh: cargo install rustic-rs failed; skipping rustic" >&2
    fi
    if wants bupstash && ! command -v bupstash >/dev/null; then
        # bupstash links libsodium through pkg-config
        if [ $INSTALL = 1 ] && ! pkg-config --exists libsodium 2>/dev/null; then
            apt-get install -y libsodium-dev pkg-config
        fi
        cargo install --locked bupstash || echo "compare.sh: cargo install bupstash failed; skipping bupstash" >&2
    fi
fi
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

if [ $GEN_ONLY = 0 ]; then
    [ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is missing: apt-get install time, or use --install"
    command -v rsync >/dev/null || die "rsync is missing: apt-get install rsync, or use --install"
    if wants cairn && [ ! -x "$CAIRN_BIN" ] && [ $BUILD = 1 ]; then
        echo "building cairn: cargo build --release -p cairn"
        (cd "$ROOT" && cargo build --release -p cairn) || echo "compare.sh: cargo build failed; cairn steps will fail" >&2
    fi
fi

# --------------------------------------------------------------------------
# corpora

gen() {  # NAME [ARGS...]
    python3 "$CORPUS_PY" gen "$1" "$CORPUS_DIR/$1" --scale "$SCALE" --seed "$SEED" "${@:2}" \
        || die "generating corpus $1 failed"
}
mkdir -p "$CORPUS_DIR"
for c in "${CORPORA[@]}"; do
    case $c in
        mixed) gen mixed; gen mutated --from "$CORPUS_DIR/mixed" ;;
        smallfiles) gen smallfiles ;;
    esac
done
[ $GEN_ONLY = 1 ] && exit 0

# --------------------------------------------------------------------------
# machine, versions

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR="$WORKDIR/runs/$RUN_ID"
LOG_DIR="$RUN_DIR/logs"
mkdir -p "$LOG_DIR"
# run a private copy of cairn: the binary in target/ may be rebuilt while this runs
if wants cairn && [ -x "$CAIRN_BIN" ]; then
    cp -p "$CAIRN_BIN" "$RUN_DIR/cairn" && CAIRN_BIN="$RUN_DIR/cairn"
fi

jstr() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/ }; printf '"%s"' "$s"; }
jnum() { if [[ ${1:-} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf null; fi; }
bytes_of() { du -sb "$1" 2>/dev/null | cut -f1; }

version_of() {  # TOOL: prints a version, or nothing if the tool is not usable
    local out
    case $1 in
        cairn) [ -x "$CAIRN_BIN" ] || return 0; out=$("$CAIRN_BIN" --version 2>&1) ;;
        restic) command -v restic >/dev/null || return 0; out=$(restic version 2>&1) ;;
        borg) command -v borg >/dev/null || return 0; out=$(borg --version 2>&1) ;;
        rustic) command -v rustic >/dev/null || return 0; out=$(rustic --version 2>&1) ;;
        bupstash) command -v bupstash >/dev/null || return 0; out=$(bupstash version 2>&1) ;;
    esac
    grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?([-.a-z0-9]*)?' <<<"$out" | head -n1
}

declare -A VERSION
ACTIVE=()
SKIPPED=()
for t in "${TOOL_LIST[@]}"; do
    v=$(version_of "$t")
    if [ -n "$v" ]; then
        VERSION[$t]=$v
        ACTIVE+=("$t")
    elif [ "$t" = cairn ]; then
        # required: run it anyway so that every step is recorded as failed
        VERSION[$t]="missing"
        ACTIVE+=("$t")
    else
        SKIPPED+=("$t")
    fi
done
[ ${#ACTIVE[@]} -gt 0 ] || { rm -rf "$RUN_DIR"; die "none of the tools ($TOOLS) is installed (see --install / --install-cargo-peers)"; }
if [ -n "${VERSION[cairn]:-}" ] && [ -d "$ROOT/.git" ]; then
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
    if [ -n "$rev" ]; then
        dirty=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -c1)
        VERSION[cairn]="${VERSION[cairn]} ($rev${dirty:+ + uncommitted changes}, binary of $(date -r "$CAIRN_BIN" '+%F %T'))"
    fi
fi

CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)
NPROC=$(nproc)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
MEM_GIB=$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
FS=$(df -PT "$WORKDIR" | awk 'NR == 2 { print $2 }')
versions_json=""
for t in "${ACTIVE[@]}"; do versions_json+="${versions_json:+, }$(jstr "$t"): $(jstr "${VERSION[$t]}")"; done
printf '{"type": "machine", "run_id": "%s", "date": "%s", "cpu": %s, "nproc": %s, "mem_gib": %s, "kernel": %s, "fs": %s, "workdir": %s, "load": %s, "scale": %s, "seed": %s, "runs": %s, "borg_compression": %s, "versions": {%s}}\n' \
    "$RUN_ID" "$(date -u +%FT%TZ)" "$(jstr "$CPU_MODEL")" "$NPROC" "$MEM_GIB" "$(jstr "$(uname -r)")" "$(jstr "$FS")" \
    "$(jstr "$WORKDIR")" "$(jstr "$LOAD")" "$SCALE" "$SEED" "$RUNS" "$(jstr "$BORG_COMPRESSION")" "$versions_json" >>"$RESULTS"
for c in "${CORPORA[@]}" $([ "$ONLY" != smallfiles ] && echo mutated); do
    python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(json.dumps({"type": "corpus", "run_id": sys.argv[2], **m}))' \
        "$CORPUS_DIR/$c.json" "$RUN_ID" >>"$RESULTS"
done

echo "machine: $CPU_MODEL, $NPROC CPUs, $MEM_GIB GiB RAM, load average $LOAD"
echo "tools: $(for t in "${ACTIVE[@]}"; do printf '%s %s\n' "$t" "${VERSION[$t]}"; done | paste -sd';' | sed 's/;/; /g')"
[ ${#SKIPPED[@]} -gt 0 ] && echo "skipped (not installed): ${SKIPPED[*]} (see --install / --install-cargo-peers)"
echo "run $RUN_ID: logs in $LOG_DIR, results appended to $RESULTS"

# --------------------------------------------------------------------------
# the tools: each sets CMD for a step from REPO, SRC, TARGET, LABEL, LAST_LABEL, LAST_OUT

cairn_env() {
    # cairn's default setup: a generated password (no memory-hard key
    # derivation, FORMAT.md §4.4), as bupstash's key file needs none either.
    export CAIRN_PASSWORD_FILE=$CACHE/cairn.password CAIRN_CACHE_DIR=$CACHE/cairn
}
cairn_cmd() {
    case $1 in
        init) CMD=(env -u CAIRN_PASSWORD_FILE "$CAIRN_BIN" -r "$REPO" init --generate-password "$CACHE/cairn.password") ;;
        # --profile: the stage table goes to the step's .err, printed after the report
        backup) CMD=("$CAIRN_BIN" -r "$REPO" backup --profile "$SRC") ;;
        restore) CMD=("$CAIRN_BIN" -r "$REPO" restore latest --target "$TARGET") ;;
    esac
}

restic_env() {
    export RESTIC_PASSWORD=$PASSWORD RESTIC_CACHE_DIR=$CACHE/restic
}
restic_cmd() {
    case $1 in
        init) CMD=(restic -r "$REPO" init) ;;
        backup) CMD=(restic -r "$REPO" backup "$SRC") ;;
        # restic recreates the absolute path under the target: TARGET/<SRC>
        restore) CMD=(restic -r "$REPO" restore latest --target "$TARGET") ;;
    esac
}

borg_env() {
    # BORG_BASE_DIR holds borg's cache (files cache, chunks cache) and its security/keys dirs
    export BORG_PASSPHRASE=$PASSWORD BORG_BASE_DIR=$CACHE/borg
}
borg_cmd() {
    case $1 in
        init) CMD=(borg init -e repokey "$REPO") ;;
        backup) CMD=(borg create --compression "$BORG_COMPRESSION" "$REPO::$LABEL" "$SRC") ;;
        # borg extracts into the current directory, under the stored (relative) path
        restore) CMD=(bash -c 'cd "$1" && exec borg extract "$2"' _ "$TARGET" "$REPO::$LAST_LABEL") ;;
    esac
}

rustic_env() {
    export RUSTIC_PASSWORD=$PASSWORD RUSTIC_CACHE_DIR=$CACHE/rustic XDG_CACHE_HOME=$CACHE/xdg
}
rustic_cmd() {
    case $1 in
        init) CMD=(rustic -r "$REPO" init) ;;
        backup) CMD=(rustic -r "$REPO" backup "$SRC") ;;
        restore) CMD=(rustic -r "$REPO" restore latest "$TARGET") ;;
    esac
}

bupstash_env() {
    export BUPSTASH_REPOSITORY=$REPO BUPSTASH_KEY=$CACHE/bupstash.key \
        BUPSTASH_SEND_LOG=$CACHE/bupstash.sendlog BUPSTASH_QUERY_CACHE=$CACHE/bupstash.qcache
}
bupstash_cmd() {
    case $1 in
        init) CMD=(bash -c 'bupstash init && bupstash new-key -o "$BUPSTASH_KEY"') ;;
        # put prints the new item's id on stdout; the send log / stat cache is on by default
        backup) CMD=(bupstash put "$SRC") ;;
        restore) CMD=(bash -c 'set -o pipefail; bupstash get "id=$1" | tar -x -C "$2"' _ "$(tail -n1 "$LAST_OUT" 2>/dev/null)" "$TARGET") ;;
    esac
}

# --------------------------------------------------------------------------
# timing and recording

run_step() {  # TOOL CORPUS STEP: runs CMD under /usr/bin/time; sets STATUS RC WALL USR SYS RSS LOAD1 BASE
    local tool=$1 corpus=$2 step=$3
    BASE="$LOG_DIR/r$REP-$corpus-$tool-$step"
    sync
    LOAD1=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %U %S %M' -o "$BASE.time" timeout -k 30 "$STEP_TIMEOUT" "${CMD[@]}" \
        >"$BASE.out" 2>"$BASE.err" </dev/null
    RC=$?
    WALL= USR= SYS= RSS=
    read -r WALL USR SYS RSS < <(tail -n1 "$BASE.time" 2>/dev/null)
    [[ $WALL =~ ^[0-9.]+$ ]] || { WALL= USR= SYS= RSS=; }
    if [ $RC = 0 ]; then STATUS=ok; else STATUS=fail; fi
}

record() {  # TOOL CORPUS STEP [EXTRA_JSON]: appends the last run_step to results.jsonl and prints a line
    local tool=$1 corpus=$2 step=$3 extra=${4:-}
    local cpu=
    [ -n "$USR" ] && cpu=$(awk -v u="$USR" -v s="$SYS" 'BEGIN { printf "%.2f", u + s }')
    printf '{"type": "step", "run_id": "%s", "rep": %s, "corpus": "%s", "tool": "%s", "version": %s, "step": "%s", "status": "%s", "rc": %s, "wall_s": %s, "user_s": %s, "sys_s": %s, "cpu_s": %s, "max_rss_kib": %s, "load1": %s, "input_bytes": %s, "input_files": %s, "log": %s%s}\n' \
        "$RUN_ID" "$REP" "$corpus" "$tool" "$(jstr "${VERSION[$tool]}")" "$step" "$STATUS" "$RC" \
        "$(jnum "$WALL")" "$(jnum "$USR")" "$(jnum "$SYS")" "$(jnum "$cpu")" "$(jnum "$RSS")" "$(jnum "$LOAD1")" \
        "$(jnum "$INPUT_BYTES")" "$(jnum "$INPUT_FILES")" "$(jstr "$BASE")" "${extra:+, $extra}" >>"$RESULTS"
    local rss_mib=
    [ -n "$RSS" ] && rss_mib=$((RSS / 1024))
    printf '  %-9s %-11s %-17s %8s s  cpu %8s s  rss %5s MiB  %s%s\n' "$tool" "$corpus" "$step" \
        "${WALL:--}" "${cpu:--}" "${rss_mib:--}" "$STATUS" "${NOTE:+  $NOTE}"
    if [ "$STATUS" != ok ]; then
        tail -n 3 "$BASE.err" 2>/dev/null | sed 's/^/      | /'
    fi
    NOTE=
}

preread() {  # warm the page cache (tar to a pipe: GNU tar skips reading file data when writing to /dev/null)
    tar -cf - -C "$1" . 2>/dev/null | cat >/dev/null
}

sync_src() {  # CORPUS: make SRC_MIXED identical to it; untouched files keep their inode, ctime and mtime
    mkdir -p "$SRC_MIXED"
    rsync -a --delete "$CORPUS_DIR/$1/" "$SRC_MIXED/" || die "rsync $1 -> $SRC_MIXED failed"
}

backup_step() {  # TOOL CORPUS STEP LABEL
    local tool=$1 corpus=$2 step=$3
    LABEL=$4
    "${tool}_cmd" backup
    run_step "$tool" "$corpus" "$step"
    LAST_LABEL=$LABEL
    LAST_OUT="$BASE.out"
    local repo_bytes cache_bytes
    repo_bytes=$(bytes_of "$REPO")
    cache_bytes=$(bytes_of "$CACHE")
    NOTE="repo $(awk -v b="${repo_bytes:-0}" 'BEGIN { printf "%.1f", b / 1e6 }') MB"
    record "$tool" "$corpus" "$step" "\"repo_bytes\": $(jnum "$repo_bytes"), \"cache_bytes\": $(jnum "$cache_bytes")"
}

bench() {  # TOOL CORPUS (runs in a subshell: the tool's environment does not leak)
    local tool=$1 corpus=$2 manifest
    local dir="$RUN_DIR/r$REP/$tool-$corpus"
    REPO="$dir/repo" CACHE="$dir/cache" TARGET="$dir/restore"
    mkdir -p "$CACHE"
    "${tool}_env"
    case $corpus in
        mixed) SRC=$SRC_MIXED; sync_src mixed ;;
        smallfiles) SRC="$CORPUS_DIR/smallfiles" ;;
    esac
    INPUT_BYTES=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["bytes"])' "$CORPUS_DIR/$corpus.json")
    INPUT_FILES=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["files"])' "$CORPUS_DIR/$corpus.json")

    "${tool}_cmd" init
    run_step "$tool" "$corpus" init
    record "$tool" "$corpus" init

    preread "$SRC"
    backup_step "$tool" "$corpus" backup_initial initial
    backup_step "$tool" "$corpus" backup_unchanged unchanged
    manifest="$CORPUS_DIR/$corpus.manifest"
    if [ "$corpus" = mixed ]; then
        sync_src mutated
        preread "$SRC"
        INPUT_BYTES=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["bytes"])' "$CORPUS_DIR/mutated.json")
        INPUT_FILES=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["files"])' "$CORPUS_DIR/mutated.json")
        backup_step "$tool" "$corpus" backup_mutated mutated
        manifest="$CORPUS_DIR/mutated.manifest"
    fi

    rm -rf "$TARGET"
    mkdir -p "$TARGET"
    "${tool}_cmd" restore
    run_step "$tool" "$corpus" restore
    local verified=n/a  # the restore itself failed
    if [ "$STATUS" = ok ]; then
        if python3 "$CORPUS_PY" verify "$manifest" "$TARGET" --src "$SRC" >"$BASE.verify" 2>&1; then
            verified=ok
            NOTE="verified: identical to the source"
        else
            verified=fail
            STATUS=fail
            NOTE="$(head -n1 "$BASE.verify") (details: $BASE.verify)"
        fi
    fi
    record "$tool" "$corpus" restore "\"verified\": \"$verified\""

    if [ $KEEP = 0 ]; then
        rm -rf "$TARGET" "$REPO"
    fi
}

# --------------------------------------------------------------------------
# main loop

NOTE=
for ((REP = 1; REP <= RUNS; REP++)); do
    for corpus in "${CORPORA[@]}"; do
        for tool in "${ACTIVE[@]}"; do
            echo "== run $REP/$RUNS: $tool on $corpus (load $(cut -d' ' -f1-3 /proc/loadavg))"
            (bench "$tool" "$corpus")
        done
    done
done
[ $KEEP = 0 ] && rm -f "$RUN_DIR/cairn"
echo
{
    report "$RUN_ID"
    # Where cairn's first backups spent their time (busy seconds summed over
    # threads, per stage; see `cairn backup --profile`).
    for corpus in "${CORPORA[@]}"; do
        err="$LOG_DIR/r1-$corpus-cairn-backup_initial.err"
        [ -f "$err" ] || continue
        echo
        echo "cairn's first backup of $corpus, stage by stage ($(nproc) cores):"
        echo
        echo '```'
        sed -n '/^stage /,/^wall /p' "$err"
        echo '```'
    done
} | tee "$RUN_DIR/report.md"
echo "(tables also in $RUN_DIR/report.md; raw results in $RESULTS)"
