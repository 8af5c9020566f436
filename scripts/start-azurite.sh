#!/usr/bin/env bash
# Start a throwaway Azurite (Azure Blob Storage emulator) and print client env vars.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: start-azurite.sh [-h] DIR PORT

Starts azurite-blob on 127.0.0.1:PORT with its data, log and pid in DIR,
creates the container AZURE_CONTAINER (default "test"), and prints 'export'
lines for object_store's MicrosoftAzureBuilder::from_env():
    AZURE_STORAGE_ACCOUNT_NAME AZURE_STORAGE_ACCOUNT_KEY
    AZURE_STORAGE_ENDPOINT AZURE_ALLOW_HTTP AZURE_CONTAINER
Stop it with: stop-azurite.sh DIR
Install Azurite with: npm install azurite@3.35.0 (3.36+ need node >= 21);
set AZURITE_BIN to the azurite-blob binary if it is not on PATH.
USAGE
}
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then usage; exit 0; fi
if [ "$#" -ne 2 ]; then usage >&2; exit 2; fi

DIR=$1
PORT=$2
CONTAINER=${AZURE_CONTAINER:-test}
BIN=${AZURITE_BIN:-$(command -v azurite-blob 2>/dev/null || true)}
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "start-azurite.sh: azurite-blob not found; install it with: npm install azurite@3.35.0 (or set AZURITE_BIN)" >&2
    exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "start-azurite.sh: port $PORT is already in use" >&2
    exit 1
fi
mkdir -p "$DIR/data"
DIR=$(cd "$DIR" && pwd -P)
nohup "$BIN" --location "$DIR/data" --blobHost 127.0.0.1 --blobPort "$PORT" \
    --skipApiVersionCheck --loose --silent </dev/null >"$DIR/azurite.log" 2>&1 &
echo $! >"$DIR/azurite.pid"

# The well-known development account of every Azure storage emulator (public).
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

create_container() { # prints the HTTP status of a SharedKey-signed "create container"
    local date ver sts hexkey sig
    date=$(TZ=GMT LC_ALL=C date '+%a, %d %b %Y %H:%M:%S GMT')
    ver=2021-08-06
    sts=$(printf 'PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n/%s/%s/%s\nrestype:container' \
        "$date" "$ver" "$ACCOUNT" "$ACCOUNT" "$CONTAINER")
    hexkey=$(printf '%s' "$KEY" | base64 -d | od -An -tx1 | tr -d ' \n')
    sig=$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PUT \
        -H "x-ms-date: $date" -H "x-ms-version: $ver" -H "Content-Length: 0" \
        -H "Authorization: SharedKey $ACCOUNT:$sig" \
        "http://127.0.0.1:$PORT/$ACCOUNT/$CONTAINER?restype=container" 2>/dev/null || true
}

deadline=$((SECONDS + ${AZURITE_START_TIMEOUT:-60}))
while :; do
    if ! kill -0 "$(cat "$DIR/azurite.pid")" 2>/dev/null; then
        echo "start-azurite.sh: azurite exited; log follows" >&2
        tail -n 30 "$DIR/azurite.log" >&2 || true
        exit 1
    fi
    code=$(create_container)
    if [ "$code" = 201 ] || [ "$code" = 409 ]; then break; fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start-azurite.sh: not ready (last status $code); log follows" >&2
        tail -n 30 "$DIR/azurite.log" >&2 || true
        kill "$(cat "$DIR/azurite.pid")" 2>/dev/null || true
        exit 1
    fi
    sleep 0.2
done

cat <<ENV
export AZURE_STORAGE_ACCOUNT_NAME=$ACCOUNT
export AZURE_STORAGE_ACCOUNT_KEY=$KEY
export AZURE_STORAGE_ENDPOINT=http://127.0.0.1:$PORT/$ACCOUNT
export AZURE_ALLOW_HTTP=true
export AZURE_CONTAINER=$CONTAINER
ENV
