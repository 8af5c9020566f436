#!/usr/bin/env bash
# Builds cairn's Debian package: the release binary, then the man pages,
# completions and example systemd units that binary generates from its own
# definitions (`cairn dist`), then `cargo deb` around them.
#
#   scripts/package.sh                    # release build -> target/debian/cairn_VERSION-1_ARCH.deb
#   scripts/package.sh --out DIR          # write the .deb into DIR
#   scripts/package.sh --profile P --binary PATH
#                                         # package an already-built binary instead of building
#                                         # (tests/package.rs: the test binary, under the
#                                         # package-test profile, to keep CI from a release build)
#   scripts/package.sh -- ARGS...         # more arguments for cargo deb (e.g. --fast)
#
# Needs: a Rust toolchain; dpkg-dev (dpkg-shlibdeps, for the libc dependency).
# Installs cargo-deb (cargo install --locked) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
binary=""
out=""
deb_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?--profile needs a name}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --) shift; deb_args=("$@"); break ;;
        *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "== installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked </dev/null
fi

# Where cargo (and so cargo-deb) puts this profile's output, whatever
# CARGO_TARGET_DIR or .cargo/config say.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
profile_dir="$target_dir/$profile"
[ "$profile" = dev ] && profile_dir="$target_dir/debug"

if [ -z "$binary" ]; then
    echo "== cargo build --profile $profile -p cairn" >&2
    cargo build --profile "$profile" --locked -p cairn --bin cairn
else
    [ -x "$binary" ] || { echo "package.sh: $binary is not an executable" >&2; exit 1; }
    mkdir -p "$profile_dir"
    if [ "$(realpath "$binary")" != "$(realpath -m "$profile_dir/cairn")" ]; then
        cp "$binary" "$profile_dir/cairn"
    fi
fi

echo "== cairn dist: man pages, completions, example units" >&2
rm -rf "$profile_dir/dist"
"$profile_dir/cairn" --quiet dist --dir "$profile_dir/dist"
# Debian policy: man pages gzipped (-n: no name or time inside, so the same
# pages give the same bytes). cargo-deb compresses only assets it did not
# find in the target directory, and these are there.
gzip -9n "$profile_dir"/dist/man/*.1

args=(-p cairn --no-build --locked --profile "$profile")
[ -n "$out" ] && args+=(--output "$out")
# Without a build, cargo-deb still strips the binary it packages (the
# release binary already is; a test binary's debug info would make a
# package of hundreds of MB).
cargo deb "${args[@]}" "${deb_args[@]}"
