#!/usr/bin/env python3
"""The adversarial campaign: cairn on its worst day, as a careless or hostile
user would make it.

  scripts/campaign.py                      # the long run (release binary)
  scripts/campaign.py --quick              # the slice scripts/test.sh runs
  scripts/campaign.py --trials 500 --seed 7 --binary target/release/cairn
  scripts/campaign.py --only crafted --seed 2026   # one campaign (flips, kills, crafted, args)

Three campaigns, each trial seeded (the seed of a failing trial reproduces it):

* flips   -- one random byte flipped in one random repository file (config,
             key, index, snapshot, pack); then `check --read-data` and
             `restore latest`. A clean error or the correct bytes pass;
             a panic, a hang or wrong restored bytes fail.
* kills   -- a backup (of a changed corpus) or a prune killed with SIGKILL at
             a random moment; then `check --read-data` must pass and every
             snapshot that existed before must still restore byte for byte.
* args    -- malformed command lines, each with the exit code it must give
             (2 for usage errors) and never a panic.

* crafted -- a snapshot crafted with the real key (crates/repo/examples/
             hostile.rs: trees that expand or nest without end, names that
             climb out, blobs of the wrong type, extents past their blob,
             escape sequences, setuid files and devices, ...); then ls,
             find, restore, check --read-data, stats and diff, each in
             bounded time and memory. Hostile content is refused with a
             clear error, hostile-but-valid content restores; nothing raw
             reaches the terminal, nothing lands outside the target, and
             the earlier snapshot still restores byte for byte.

Prints one table: trials, passed, clean errors, panics, wrong bytes, hangs,
lost snapshots. Exits 1 if any trial failed.
"""

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "campaign password"
TIMEOUT = 120  # seconds per command: longer is a hang
MEMORY_LIMIT = 4 << 30  # bytes of address space per command
OUTSIDE = "/tmp/cairn-campaign-outside"  # where crafted symlinks point; nothing may appear there


class Tally:
    def __init__(self, name):
        self.name = name
        self.trials = self.passed = self.clean_errors = 0
        self.panics = self.wrong_bytes = self.hangs = self.lost = 0
        self.failures = []

    def failed(self):
        return self.panics + self.wrong_bytes + self.hangs + self.lost


def limit_memory():
    """In the child: at most MEMORY_LIMIT of address space, so a reader
    that tries to hold a crafted object's claimed size fails (and is
    counted as a crash) instead of swapping the machine to death."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(cairn, repo, args, cache, timeout=TIMEOUT, stdin=subprocess.DEVNULL, raw=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "AWS_"))}
    env.update({"CAIRN_PASSWORD": PASSWORD, "CAIRN_CACHE_DIR": cache, "NO_COLOR": "1"})
    cmd = [cairn] + (["-r", repo] if repo else []) + args
    try:
        p = subprocess.run(cmd, env=env, stdin=stdin, capture_output=True, timeout=timeout, preexec_fn=limit_memory)
        if raw:
            return p.returncode, p.stdout, p.stderr
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, "", "timeout"


def panicked(code, err):
    """A panic, or any death by signal (an abort on stack overflow or on
    failing to allocate): never a clean outcome."""
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return code == 101 or code < 0 or "panicked" in err or "overflowed its stack" in err


def crash_or_hang(tally, name, code, err):
    """Counts a hang or a crash of command `name` in `tally`; returns what
    went wrong, or None when it ended on its own."""
    if code is None:
        tally.hangs += 1
        return f"{name} hung (over the time limit)"
    if panicked(code, err):
        tally.panics += 1
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return f"{name} crashed (exit {code}): {err.strip()[-300:]}"
    return None


def write_corpus(path, rng, files=40):
    """Files of several kinds: noise, text, an empty one, a sparse one."""
    os.makedirs(os.path.join(path, "sub"), exist_ok=True)
    for i in range(files):
        size = rng.choice([0, 10, 4000, 70_000, 300_000])
        data = rng.randbytes(size) if i % 2 else (b"line %d\n" % i) * (size // 8 + 1)
        with open(os.path.join(path, "sub" if i % 3 == 0 else "", f"f{i:03}"), "wb") as f:
            f.write(data)
    with open(os.path.join(path, "sparse"), "wb") as f:
        f.truncate(5_000_000)
        f.seek(2_000_000)
        f.write(b"middle")


def digest_tree(path):
    out = {}
    for base, _, files in os.walk(path):
        for name in files:
            full = os.path.join(base, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def pristine(cairn, work, rng, snapshots=2):
    """A repository with `snapshots` backups of a changing corpus; returns
    (repo, corpus, cache, [digest of each snapshot's corpus])."""
    repo, corpus, cache = (os.path.join(work, n) for n in ("repo", "corpus", "cache"))
    code, _, err = run(cairn, repo, ["init", "--kdf-memory", "8MiB", "--kdf-iterations", "1",
                                     "--pack-size", "1MiB"], cache)
    assert code == 0, err
    digests = []
    for n in range(snapshots):
        write_corpus(corpus, rng)
        code, _, err = run(cairn, repo, ["backup", "-q", corpus], cache)
        assert code == 0, err
        digests.append(digest_tree(corpus))
    return repo, corpus, cache, digests


def repository_files(repo):
    out = []
    for base, _, files in os.walk(repo):
        for name in files:
            if "locks" not in base:
                out.append(os.path.join(base, name))
    return sorted(out)


def flips(cairn, trials, seed, tally):
    rng = random.Random(f"flips-{seed}")
    with tempfile.TemporaryDirectory() as base:
        repo0, corpus, cache0, digests = pristine(cairn, os.path.join(base, "p"), rng, snapshots=1)
        for t in range(trials):
            tally.trials += 1
            work = os.path.join(base, f"t{t}")
            repo, cache = os.path.join(work, "repo"), os.path.join(work, "cache")
            shutil.copytree(repo0, repo)
            victim = rng.choice(repository_files(repo))
            with open(victim, "r+b") as f:
                data = bytearray(f.read())
                if not data:
                    continue
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
                f.seek(0)
                f.write(data)
            what = f"{os.path.relpath(victim, repo)} byte {pos} (trial {t}, seed {seed})"
            outcomes = []
            for args in (["check", "--read-data"], ["restore", "latest", "--target", os.path.join(work, "out")]):
                code, _, err = run(cairn, repo, args, cache)
                outcomes.append((args[0], code, err))
            bad = None
            for name, code, err in outcomes:
                bad = crash_or_hang(tally, name, code, err) or bad
            restore_code = outcomes[1][1]
            if bad is None and restore_code == 0 and digest_tree(os.path.join(work, "out")) != digests[0]:
                tally.wrong_bytes += 1
                bad = "restore exited 0 with wrong bytes"
            if bad:
                tally.failures.append(f"{what}: {bad}")
            elif any(code != 0 for _, code, _ in outcomes):
                tally.clean_errors += 1
            else:
                tally.passed += 1
            shutil.rmtree(work)


def crafted(cairn, trials, seed, tally):
    """Snapshots crafted with the real key (crates/repo/examples/hostile.rs):
    every reader finishes in bounded time and memory with a clean error (or,
    for hostile-but-valid content, a correct restore), prints no raw control
    character, writes nothing outside its target, and loses no earlier
    snapshot."""
    hostile = os.path.join(os.path.dirname(cairn), "examples", "hostile")
    if not os.access(hostile, os.X_OK):
        sys.exit(f"{hostile} not found: build it first (cargo build -p cairn-repo --example hostile, "
                 "with --release for a release binary)")
    env = dict(os.environ, CAIRN_PASSWORD=PASSWORD)
    kinds = [line.split("\t")[:2] for line in
             subprocess.run([hostile, "--list"], capture_output=True, text=True, check=True).stdout.splitlines()]
    rng = random.Random(f"crafted-{seed}")
    rng.shuffle(kinds)
    with tempfile.TemporaryDirectory() as base:
        repo0, _, cache0, digests = pristine(cairn, os.path.join(base, "p"), rng, snapshots=1)
        _, listing, _ = run(cairn, repo0, ["--json", "snapshots"], cache0)
        first = json.loads(listing)[0]["id"]
        # Every kind at least once, even in the quick slice.
        for t in range(max(trials, len(kinds))):
            kind, verdict = kinds[t % len(kinds)]
            tally.trials += 1
            work = os.path.join(base, f"t{t}")
            repo, cache, out = (os.path.join(work, n) for n in ("repo", "cache", "out"))
            shutil.copytree(repo0, repo)
            started = time.time()
            made = subprocess.run([hostile, repo, kind], env=env, capture_output=True, text=True, timeout=TIMEOUT)
            if made.returncode != 0:
                tally.failures.append(f"crafting {kind} failed: {made.stderr.strip()[-300:]}")
                continue
            snap = made.stdout.strip()
            what = f"{kind} (trial {t}, seed {seed})"
            commands = [["ls", "-l", snap], ["find", "*"], ["restore", snap, "--target", out],
                        ["check", "--read-data"], ["stats", snap], ["diff", first, snap]]
            outcomes = {}
            bad = None
            for args in commands:
                code, stdout, stderr = run(cairn, repo, args, cache, raw=True)
                outcomes[args[0]] = code
                bad = crash_or_hang(tally, args[0], code, stderr)
                if bad:
                    break
                lines = stdout.count(b"\n")
                if kind == "wide" and args[0] == "ls" and lines > 0:
                    # Refused before the first line, not a million lines later.
                    tally.wrong_bytes += 1
                    bad = f"ls printed {lines} line(s) of a tree that expands without end"
                elif b"\x1b" in stdout or b"\x1b" in stderr:
                    tally.wrong_bytes += 1
                    bad = f"{args[0]} printed a raw escape sequence"
                elif code != 0 and not stderr.strip():
                    tally.lost += 1
                    bad = f"{args[0]} exited {code} without saying why"
                if bad:
                    break
            if bad is None and os.path.lexists(OUTSIDE):
                tally.wrong_bytes += 1
                bad = f"something was written outside the restore target: {OUTSIDE}"
                shutil.rmtree(OUTSIDE, ignore_errors=True)
            if bad is None and sorted(os.listdir(work)) not in (["cache", "out", "repo"], ["cache", "repo"]):
                tally.wrong_bytes += 1
                bad = f"something was written outside the restore target: {sorted(os.listdir(work))}"
            if bad is None:
                refused = outcomes["restore"] != 0 or outcomes["check"] != 0
                if verdict == "refuse" and not (outcomes["restore"] != 0 and outcomes["check"] != 0):
                    tally.lost += 1
                    bad = f"accepted: restore exit {outcomes['restore']}, check exit {outcomes['check']}"
                elif verdict == "accept" and refused:
                    tally.lost += 1
                    bad = f"refused: restore exit {outcomes['restore']}, check exit {outcomes['check']}"
            if bad is None:
                again = os.path.join(work, "again")
                code, _, err = run(cairn, repo, ["restore", first, "--target", again], cache)
                if code != 0 or digest_tree(again) != digests[0]:
                    tally.lost += 1
                    bad = f"the earlier snapshot no longer restores: exit {code}: {err.strip()[-200:]}"
            if os.environ.get("CAMPAIGN_VERBOSE"):
                print(f"  {what}: {outcomes} in {time.time() - started:.1f}s", flush=True)
            if bad:
                tally.failures.append(f"{what}: {bad}")
            elif verdict == "accept" or (verdict == "either" and outcomes["restore"] == 0):
                tally.passed += 1
            else:
                tally.clean_errors += 1
            remove(work)


def remove(path):
    """rm -rf: a crafted snapshot restores directories nested too deep for
    shutil.rmtree's recursion."""
    subprocess.run(["rm", "-rf", "--", path], check=True)


def kills(cairn, trials, seed, tally):
    rng = random.Random(f"kills-{seed}")
    with tempfile.TemporaryDirectory() as base:
        repo0, corpus, cache0, digests = pristine(cairn, os.path.join(base, "p"), rng, snapshots=2)
        env_grace = dict(os.environ, CAIRN_TEST_MIN_GRACE_SECS="0")
        for t in range(trials):
            tally.trials += 1
            work = os.path.join(base, f"t{t}")
            repo, cache = os.path.join(work, "repo"), os.path.join(work, "cache")
            shutil.copytree(repo0, repo)
            code, out, err = run(cairn, repo, ["--json", "snapshots"], cache)
            before = [s["id"] for s in json.loads(out)]
            victim = rng.choice(["backup", "prune", "forget-prune"])
            if victim == "backup":
                write_corpus(corpus, rng)
                args = ["backup", "-q", corpus]
            elif victim == "prune":
                args = ["prune", "--grace", "0s", "--max-unused", "0%"]
            else:
                # A policy that keeps every snapshot, then a prune: nothing
                # earlier may be lost whenever the kill lands.
                args = ["forget", "--keep-last", "10", "--prune", "--grace", "0s"]
            env = {k: v for k, v in env_grace.items() if not k.startswith("AWS_")}
            env.update({"CAIRN_PASSWORD": PASSWORD, "CAIRN_CACHE_DIR": cache, "CAIRN_REPOSITORY": repo})
            proc = subprocess.Popen([cairn] + args, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.0, 0.6))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
            what = f"{victim} killed (trial {t}, seed {seed})"
            code, out, err = run(cairn, repo, ["check", "--read-data"], cache)
            bad = crash_or_hang(tally, "check", code, err)
            if bad is None and code != 0:
                tally.lost += 1
                bad = f"check failed after the kill: {(out + err).strip()[-400:]}"
            for i, snap in enumerate(before):
                if bad:
                    break
                target = os.path.join(work, f"out{i}")
                code, _, err = run(cairn, repo, ["restore", snap, "--target", target], cache)
                if code != 0 or digest_tree(target) != digests[i]:
                    tally.lost += 1
                    bad = f"snapshot {snap[:8]} no longer restores: {err.strip()[-300:]}"
            if bad:
                tally.failures.append(f"{what}: {bad}")
            else:
                tally.passed += 1
            shutil.rmtree(work)


# (arguments, expected exit code); `REPO` is replaced by a real repository.
BAD_ARGUMENTS = [
    (["--no-such-flag"], 2),
    (["backup"], 2),
    (["-r", "REPO", "check", "--read-data-subset", "8/7"], 2),
    (["-r", "REPO", "check", "--read-data-subset", "nonsense"], 2),
    (["-r", "REPO", "prune", "--max-unused", "150%"], 2),
    (["-r", "REPO", "prune", "--grace", "10m"], 1),
    (["-r", "REPO", "forget"], 2),
    (["-r", "REPO", "forget", "--keep-last", "1", "--group-by", "colour"], 2),
    (["-r", "REPO", "forget", "--keep-last", "1", "latest"], 2),
    (["-r", "REPO", "restore", "zzzz", "--target", "/tmp/x"], 1),
    (["-r", "REPO", "restore", "latest"], 2),
    (["-r", "REPO", "backup", "/no/such/path"], 1),
    (["-r", "REPO", "backup", "--time", "yesterday", "."], 2),
    (["-r", "REPO", "backup", "--stdin-from-command"], 2),
    (["-r", "REPO", "ls", "latest", "/no/such/file"], 1),
    (["-r", "b2:bucket/x", "snapshots"], 1),
    (["-r", "sftp:host:/srv", "snapshots"], 1),
    (["-r", "/no/such/repository", "snapshots"], 10),
    (["-r", "REPO", "cat", "snapshot", "not-hex"], 1),
    (["-r", "REPO", "tag", "latest"], 2),
    (["-r", "REPO", "tag", "latest", "--set", "a", "--add", "b"], 2),
    (["-r", "REPO", "key", "remove", "0000"], 1),
    (["-r", "REPO", "pg", "backup", "-d", "postgresql://[::1"], 2),
    (["-r", "REPO", "pg", "backup", "-d", "host=x port=notanumber"], 2),
    (["-r", "REPO", "pg", "backup", "--table", "a.b.c.d"], 2),
]


def bad_arguments(cairn, seed, tally):
    with tempfile.TemporaryDirectory() as base:
        repo, _, cache, _ = pristine(cairn, os.path.join(base, "p"), random.Random(seed), snapshots=1)
        for args, expected in BAD_ARGUMENTS:
            tally.trials += 1
            args = [repo if a == "REPO" else a for a in args]
            code, _, err = run(cairn, None, args, cache, timeout=30)
            bad = crash_or_hang(tally, "cairn", code, err)
            if bad:
                tally.failures.append(f"{args}: {bad}")
            elif code != expected:
                tally.lost += 1  # counted as a failure: the wrong exit code
                tally.failures.append(f"{args}: exit {code}, expected {expected}: {err.strip()[-200:]}")
            else:
                tally.clean_errors += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    ap.add_argument("--binary", default=os.path.join(target, "release", "cairn"))
    ap.add_argument("--trials", type=int, default=200, help="trials per campaign (flips, kills)")
    ap.add_argument("--seed", type=int, default=None, help="default: 1 with --quick (CI is repeatable), else the clock")
    ap.add_argument("--quick", action="store_true", help="a small, fast slice (debug binary, 12 trials each)")
    ap.add_argument("--only", default="flips,kills,crafted,args",
                    help="which campaigns to run, comma-separated (default: all four)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"flips", "kills", "crafted", "args"}
    if unknown:
        ap.error(f"unknown campaign(s) {', '.join(sorted(unknown))}: choose from flips, kills, crafted, args")
    if args.seed is None:
        args.seed = 1 if args.quick else int(time.time()) % 100000
    if args.quick:
        args.trials = 12
        if args.binary == os.path.join(target, "release", "cairn"):
            args.binary = os.path.join(target, "debug", "cairn")
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} not found: build it first (cargo build --release -p cairn)")
    print(f"campaign: {args.binary}, {args.trials} trials per campaign, seed {args.seed}", flush=True)
    campaigns = [
        ("flips", Tally("byte flips"), lambda t: flips(args.binary, args.trials, args.seed, t)),
        ("kills", Tally("kill -9"), lambda t: kills(args.binary, args.trials, args.seed, t)),
        ("crafted", Tally("crafted objects"), lambda t: crafted(args.binary, args.trials, args.seed, t)),
        ("args", Tally("bad arguments"), lambda t: bad_arguments(args.binary, args.seed, t)),
    ]
    tallies = []
    started = time.time()
    for name, tally, run_campaign in campaigns:
        if name in only:
            run_campaign(tally)
            tallies.append(tally)
    print()
    print("| campaign | trials | passed | clean errors | panics | wrong bytes | hangs | lost snapshots / wrong exit |")
    print("|---|---|---|---|---|---|---|---|")
    for t in tallies:
        print(f"| {t.name} | {t.trials} | {t.passed} | {t.clean_errors} | {t.panics} | {t.wrong_bytes} "
              f"| {t.hangs} | {t.lost} |")
    print(f"\n{time.time() - started:.0f}s")
    failures = [f for t in tallies for f in t.failures]
    for f in failures:
        print(f"FAILED: {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
