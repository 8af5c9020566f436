#!/usr/bin/env python3
"""Deterministic benchmark corpora for benches/compare.sh.

    corpus.py gen mixed      DIR [--scale S] [--seed N]
    corpus.py gen smallfiles DIR [--scale S] [--seed N]
    corpus.py gen mutated    DIR --from MIXED_DIR [--scale S] [--seed N]
    corpus.py manifest DIR                   (to stdout)
    corpus.py verify MANIFEST TARGET [--src PATH]

`gen` writes into DIR.tmp and renames it to DIR when done, together with
DIR.manifest (sha256 of every file) and DIR.json (parameters and counts). An
existing DIR with a DIR.json of the same parameters is reused as is; one with
different parameters is an error (delete it or use another work dir).

Everything is derived from `random.Random` seeded with strings (stable across
Python versions and runs; no os.urandom), including file mtimes, so two
machines generate byte-identical trees.

Corpora (scale 1):
  mixed       2 GiB in ~2,000 files, log-normal sizes (sigma 1.5, median
              ~300 KiB, largest ~70 MiB), in ~100 nested directories; half of
              the bytes incompressible (*.bin, random bytes), half text-like
              (*.log: generated log lines full of random numbers and ids;
              zstd -3 ratio ~3.9).
  smallfiles  200,000 files of 100 B - 16 KiB (log-uniform, mean ~3.2 KB,
              ~640 MB), half text half random, in 12,500 directories
              (100 top-level directories of 124 subdirectories each).
  mutated     mixed with 5% of the files overwritten in place (one region of
              4-80 KiB each), 2% appended to (16-150 KiB), 1% deleted and 1%
              new files (sizes from the same distribution).
--scale multiplies the file and directory counts (and so the bytes).
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time

GENERATOR_VERSION = 1
MIB = 1 << 20
BLOCK = 4 * MIB
MTIME_BASE = 1_750_000_000  # mtimes of the generated files (2025-06-15)
MTIME_MUTATED = 1_760_000_000  # mtimes of files changed or added in `mutated`

MIXED_FILES = 2000
MIXED_BYTES = 2 << 30
MIXED_DIRS = 100
MIXED_SIGMA = 1.5
SMALL_FILES = 200_000
SMALL_DIRS = 12_500
SMALL_MIN, SMALL_MAX = 100, 16 * 1024


# --------------------------------------------------------------------------
# text that looks like application logs (timestamps, levels, ids, numbers)

LEVELS = ("INFO ", "INFO ", "INFO ", "INFO ", "DEBUG", "DEBUG", "WARN ", "ERROR")
SERVICES = ("http-worker", "db-pool", "cache", "scheduler", "auth", "payment", "ingest", "grpc")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
PATHS = ("/api/v1/items/", "/api/v1/users/", "/api/v2/orders/", "/static/img/", "/api/v1/search?q=", "/health/")
STATUS = (200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 500, 503)
JOBS = ("cleanup", "compaction", "rebalance", "snapshot", "vacuum", "rotate", "sync", "reindex")
ERRORS = ("card_declined", "timeout", "connection reset by peer", "insufficient_funds", "deadlock detected", "EOF")


class TextGen:
    """An endless, deterministic stream of log lines."""

    def __init__(self, rng):
        self.rng = rng
        self.ts = 1_763_000_000_000 + rng.randrange(10**10)  # milliseconds
        self.sec = -1
        self.secstr = ""

    def lines(self, n):
        rng = self.rng
        u = memoryview(rng.randbytes(32 * n)).cast("I")
        hx = rng.randbytes(8 * n).hex()
        out = []
        ap = out.append
        ts, sec, secstr = self.ts, self.sec, self.secstr
        for i in range(n):
            j = 8 * i
            a, b, c, d, e, f, g = u[j], u[j + 1], u[j + 2], u[j + 3], u[j + 4], u[j + 5], u[j + 6]
            ts += a % 97
            s = ts // 1000
            if s != sec:
                sec = s
                secstr = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
            t = "%s.%03dZ %s [%s-%d] " % (secstr, ts % 1000, LEVELS[b & 7], SERVICES[(b >> 3) & 7], (b >> 6) % 16)
            k = (b >> 10) % 10
            rid = hx[16 * i:16 * i + 16]
            if k < 5:
                ap("%sreq=%s %s %s%d status=%d bytes=%d dur_ms=%d client=10.%d.%d.%d\n" % (
                    t, rid, METHODS[c % 6], PATHS[(c >> 3) % 6], d % 1000000, STATUS[(c >> 6) % 12],
                    e % 65536, f % 2000, g & 255, (g >> 8) & 255, (g >> 16) & 255))
            elif k < 7:
                ap("%sslow query took %d ms: SELECT id, total FROM orders WHERE customer_id = %d "
                   "AND created_at > %d (rows=%d)\n" % (t, c % 5000, d % 1000000, 1700000000 + e % 10**8, f % 1000))
            elif k < 8:
                ap("%scache miss key=user:%d:profile shard=%d ttl=%d\n" % (t, d % 1000000, c % 64, 60 * (e % 30)))
            elif k < 9:
                ap("%sjob=%s-%d finished in %d.%03ds, removed %d files, freed %d KiB trace=%s\n" % (
                    t, JOBS[c & 7], (c >> 3) % 50, d % 100, e % 1000, f % 5000, g % 10**7, rid))
            else:
                ap("%scharge failed order=ORD-%08d amount=%d.%02d EUR code=%s trace=%s\n" % (
                    t, d % 10**8, e % 2000, f % 100, ERRORS[c % 6], rid))
        self.ts, self.sec, self.secstr = ts, sec, secstr
        return "".join(out).encode()

    def text(self, nbytes):
        """Exactly nbytes of log text (the last line is cut)."""
        parts, have = [], 0
        while have < nbytes:
            blk = self.lines(min(20000, (nbytes - have) // 110 + 4))
            parts.append(blk)
            have += len(blk)
        return b"".join(parts)[:nbytes]


def content(kind, rng, tg, nbytes):
    """Yields nbytes of content of `kind` ("log" or "bin") in blocks."""
    left = nbytes
    while left > 0:
        n = min(BLOCK, left)
        yield tg.text(n) if kind == "log" else rng.randbytes(n)
        left -= n


def write_file(path, kind, rng, tg, nbytes, mtime):
    with open(path, "wb") as f:
        for blk in content(kind, rng, tg, nbytes):
            f.write(blk)
    os.utime(path, (mtime, mtime))


def set_dir_mtimes(root):
    for d, _, _ in os.walk(root, topdown=False):
        os.utime(d, (MTIME_BASE, MTIME_BASE))


# --------------------------------------------------------------------------
# plans: what each corpus contains, computed from the seed alone


def scaled(n, scale, minimum=1):
    return max(minimum, int(round(n * scale)))


def mixed_plan(seed, scale):
    """(dirs, files): dirs are relative paths; files are dicts with path, size, kind, rng seed."""
    rng = random.Random(f"cairn-corpus-{seed}-mixed-plan")
    nfiles = scaled(MIXED_FILES, scale, 4)
    ndirs = scaled(MIXED_DIRS, scale, 1)
    total = int(MIXED_BYTES * nfiles / MIXED_FILES)
    # nested directories: each new one goes under a random existing one of depth < 4
    dirs = [""]
    depth = {"": 0}
    for k in range(ndirs):
        parent = rng.choice([d for d in dirs if depth[d] < 4])
        name = "%s%03d" % (rng.choice(("app", "svc", "data", "logs", "var", "node", "shard", "tmp")), k)
        d = f"{parent}/{name}" if parent else name
        dirs.append(d)
        depth[d] = depth[parent] + 1
    raw = [rng.lognormvariate(0, MIXED_SIGMA) for _ in range(nfiles)]
    factor = total / sum(raw)
    sizes = [max(1, int(x * factor)) for x in raw]
    sizes[sizes.index(max(sizes))] += total - sum(sizes)
    # half the bytes text, half random: each file (in random order) goes to the kind with fewer bytes so far
    kinds = [None] * nfiles
    have = {"log": 0, "bin": 0}
    order = list(range(nfiles))
    rng.shuffle(order)
    for i in order:
        k = "log" if have["log"] <= have["bin"] else "bin"
        kinds[i] = k
        have[k] += sizes[i]
    files = []
    for i in range(nfiles):
        d = rng.choice(dirs)
        name = "%05d.%s" % (i, kinds[i])
        files.append({"i": i, "path": f"{d}/{name}" if d else name, "size": sizes[i], "kind": kinds[i]})
    return dirs, files, factor


def gen_mixed(out, seed, scale):
    dirs, files, _ = mixed_plan(seed, scale)
    for d in dirs:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    for f in files:
        rng = random.Random(f"cairn-corpus-{seed}-mixed-file-{f['i']}")
        write_file(os.path.join(out, f["path"]), f["kind"], rng, TextGen(rng), f["size"], MTIME_BASE + 7 * f["i"])
    set_dir_mtimes(out)
    log_bytes = sum(f["size"] for f in files if f["kind"] == "log")
    return {"files": len(files), "dirs": len(dirs), "bytes": sum(f["size"] for f in files), "text_bytes": log_bytes}


def gen_mutated(out, seed, scale, mixed_dir):
    dirs, files, factor = mixed_plan(seed, scale)
    check_params(mixed_dir, "mixed", seed, scale)
    shutil.copytree(mixed_dir, out, symlinks=True, copy_function=shutil.copy2)
    rng = random.Random(f"cairn-corpus-{seed}-mutate")
    n = len(files)
    counts = {k: max(1, int(round(n * p))) for k, p in (("modified", 0.05), ("appended", 0.02), ("deleted", 0.01), ("new", 0.01))}
    order = list(range(n))
    rng.shuffle(order)
    sel = {}
    pos = 0
    for k in ("modified", "appended", "deleted"):
        sel[k] = sorted(order[pos:pos + counts[k]])
        pos += counts[k]
    stats = {k: {"files": 0, "bytes": 0} for k in counts}
    for i in sel["modified"]:
        f = files[i]
        frng = random.Random(f"cairn-corpus-{seed}-mutate-file-{i}")
        length = min(f["size"], frng.randint(4096, 80 * 1024))
        offset = frng.randint(0, f["size"] - length)
        path = os.path.join(out, f["path"])
        with open(path, "r+b") as fh:
            fh.seek(offset)
            for blk in content(f["kind"], frng, TextGen(frng), length):
                fh.write(blk)
        os.utime(path, (MTIME_MUTATED + i, MTIME_MUTATED + i))
        stats["modified"]["files"] += 1
        stats["modified"]["bytes"] += length
    for i in sel["appended"]:
        f = files[i]
        frng = random.Random(f"cairn-corpus-{seed}-mutate-file-{i}")
        length = frng.randint(16 * 1024, 150 * 1024)
        path = os.path.join(out, f["path"])
        with open(path, "ab") as fh:
            for blk in content(f["kind"], frng, TextGen(frng), length):
                fh.write(blk)
        os.utime(path, (MTIME_MUTATED + i, MTIME_MUTATED + i))
        stats["appended"]["files"] += 1
        stats["appended"]["bytes"] += length
    for i in sel["deleted"]:
        os.unlink(os.path.join(out, files[i]["path"]))
        stats["deleted"]["files"] += 1
        stats["deleted"]["bytes"] += files[i]["size"]
    for k in range(counts["new"]):
        i = n + k
        frng = random.Random(f"cairn-corpus-{seed}-mutate-file-{i}")
        size = max(1, int(frng.lognormvariate(0, MIXED_SIGMA) * factor))
        kind = "log" if k % 2 == 0 else "bin"
        d = frng.choice(dirs)
        name = "%05d.%s" % (i, kind)
        write_file(os.path.join(out, d, name), kind, frng, TextGen(frng), size, MTIME_MUTATED + i)
        stats["new"]["files"] += 1
        stats["new"]["bytes"] += size
    set_dir_mtimes(out)
    total = sum(f["size"] for f in files) + stats["appended"]["bytes"] - stats["deleted"]["bytes"] + stats["new"]["bytes"]
    return {"files": n - counts["deleted"] + counts["new"], "dirs": len(dirs), "bytes": total, "mutations": stats}


def gen_smallfiles(out, seed, scale):
    rng = random.Random(f"cairn-corpus-{seed}-smallfiles")
    tg = TextGen(rng)
    nfiles = scaled(SMALL_FILES, scale, 10)
    ndirs = scaled(SMALL_DIRS, scale, 1)
    tops = max(1, int(round(ndirs / 125)))
    nleaves = ndirs - tops
    topnames = ["t%03d" % t for t in range(tops)]
    leaves = ["%s/s%04d" % (topnames[j % tops], j) for j in range(nleaves)] or topnames
    for d in topnames + leaves:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    lo, hi = math.log(SMALL_MIN), math.log(SMALL_MAX)
    total = text = 0
    for i in range(nfiles):
        size = min(SMALL_MAX, int(math.exp(rng.uniform(lo, hi))))
        kind = "log" if rng.random() < 0.5 else "bin"
        data = tg.text(size) if kind == "log" else rng.randbytes(size)
        path = os.path.join(out, leaves[i % len(leaves)], "%06d.%s" % (i, kind))
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (MTIME_BASE + i, MTIME_BASE + i))
        total += size
        text += size if kind == "log" else 0
    set_dir_mtimes(out)
    return {"files": nfiles, "dirs": len(set(topnames + leaves)), "bytes": total, "text_bytes": text}


# --------------------------------------------------------------------------
# manifests


def walk(root):
    """Yields (kind, relpath, size, target-or-None) for everything under root, sorted."""
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        with os.scandir(full) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            p = f"{rel}/{e.name}" if rel else e.name
            if e.is_symlink():
                yield ("L", p, os.readlink(e.path))
            elif e.is_dir():
                yield ("D", p, None)
                subdirs.append(p)
            elif e.is_file():
                yield ("F", p, e.path)
            else:
                yield ("S", p, None)
        stack.extend(reversed(subdirs))


def manifest_lines(root):
    for kind, p, extra in walk(root):
        if kind == "F":
            with open(extra, "rb") as f:
                h = hashlib.file_digest(f, "sha256").hexdigest()
            yield f"F\t{p}\t{os.path.getsize(extra)}\t{h}"
        elif kind == "L":
            yield f"L\t{p}\t{extra}"
        else:
            yield f"{kind}\t{p}"


def write_manifest(root, dest):
    with open(dest, "w") as out:
        for line in manifest_lines(root):
            out.write(line + "\n")


def cmd_manifest(args):
    for line in manifest_lines(args.dir):
        print(line)


def cmd_verify(args):
    """Compares TARGET (or the place under it where the backup tool put the tree) with MANIFEST."""
    with open(args.manifest) as f:
        want = {}
        for line in f:
            line = line.rstrip("\n")
            if line:
                want[line.split("\t")[1]] = line
    first = next(iter(want), None)
    candidates = []
    if args.src:
        src = os.path.abspath(args.src)
        candidates += [args.target + src, os.path.join(args.target, os.path.basename(src))]
    candidates.append(args.target)
    root = None
    for c in candidates:
        if os.path.isdir(c) and (first is None or os.path.lexists(os.path.join(c, first))):
            root = c
            break
    if root is None:
        print(f"verify: restored tree not found under {args.target} (looked at {', '.join(candidates)})")
        return 1
    got = {line.split("\t")[1]: line for line in manifest_lines(root)}
    missing = [p for p in want if p not in got]
    extra = [p for p in got if p not in want]
    differ = [p for p in want if p in got and got[p] != want[p]]
    if not (missing or extra or differ):
        print(f"verify: ok, {len(want)} entries identical in {root}")
        return 0
    print(f"verify: FAILED in {root}: {len(missing)} missing, {len(extra)} unexpected, {len(differ)} different")
    for label, lst in (("missing", missing), ("unexpected", extra), ("different", differ)):
        for p in lst[:5]:
            print(f"  {label}: {p}" + (f"\n    want {want[p]}\n    got  {got[p]}" if label == "different" else ""))
    return 1


# --------------------------------------------------------------------------


def check_params(d, name, seed, scale):
    meta = d + ".json"
    if not (os.path.isdir(d) and os.path.isfile(meta)):
        sys.exit(f"corpus.py: {d} is missing or incomplete (no {meta})")
    with open(meta) as f:
        m = json.load(f)
    want = {"corpus": name, "seed": seed, "scale": scale, "generator": GENERATOR_VERSION}
    have = {k: m.get(k) for k in want}
    if have != want:
        sys.exit(f"corpus.py: {d} was generated with {have}, wanted {want}; delete it (and {meta}) to regenerate")
    return m


def cmd_gen(args):
    out = os.path.abspath(args.dir)
    meta = out + ".json"
    if os.path.exists(meta) and os.path.isdir(out):
        m = check_params(out, args.corpus, args.seed, args.scale)
        print(f"corpus {args.corpus}: reusing {out} ({m['files']} files, {m['bytes'] / 1e6:.1f} MB)")
        return 0
    if os.path.exists(out):
        sys.exit(f"corpus.py: {out} exists without {meta} (interrupted generation?); delete it to regenerate")
    tmp = out + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    t0 = time.time()
    if args.corpus == "mixed":
        stats = gen_mixed(tmp, args.seed, args.scale)
    elif args.corpus == "smallfiles":
        stats = gen_smallfiles(tmp, args.seed, args.scale)
    else:
        if not args.from_dir:
            sys.exit("corpus.py: gen mutated needs --from MIXED_DIR")
        shutil.rmtree(tmp)
        stats = gen_mutated(tmp, args.seed, args.scale, os.path.abspath(args.from_dir))
    t_gen = time.time() - t0
    write_manifest(tmp, out + ".manifest")
    os.rename(tmp, out)
    m = {"corpus": args.corpus, "seed": args.seed, "scale": args.scale, "generator": GENERATOR_VERSION,
         **stats, "gen_seconds": round(t_gen, 1), "manifest_seconds": round(time.time() - t0 - t_gen, 1)}
    with open(meta, "w") as f:
        json.dump(m, f, indent=1)
        f.write("\n")
    print(f"corpus {args.corpus}: generated {out}: {stats['files']} files, {stats['dirs']} dirs, "
          f"{stats['bytes'] / 1e6:.1f} MB in {t_gen:.1f} s (+{m['manifest_seconds']} s manifest)")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("corpus", choices=("mixed", "smallfiles", "mutated"))
    g.add_argument("dir")
    g.add_argument("--scale", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--from", dest="from_dir")
    m = sub.add_parser("manifest")
    m.add_argument("dir")
    v = sub.add_parser("verify")
    v.add_argument("manifest")
    v.add_argument("target")
    v.add_argument("--src", help="the backed-up path (restored trees are looked for at TARGET/SRC, TARGET/basename(SRC), TARGET)")
    args = ap.parse_args()
    return {"gen": cmd_gen, "manifest": cmd_manifest, "verify": cmd_verify}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
