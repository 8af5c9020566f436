#!/usr/bin/env bash
# Stop an Azurite started by start-azurite.sh DIR; with --rm also delete DIR.
set -euo pipefail
RM=0
if [ "${1:-}" = "--rm" ]; then RM=1; shift; fi
if [ "$#" -ne 1 ]; then echo "usage: stop-azurite.sh [--rm] DIR" >&2; exit 2; fi
DIR=$1
if [ -f "$DIR/azurite.pid" ]; then
    pid=$(cat "$DIR/azurite.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/azurite.pid"
fi
if [ "$RM" -eq 1 ]; then rm -rf -- "$DIR"; fi
