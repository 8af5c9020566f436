#!/usr/bin/env bash
# Writes a few well-formed inputs into fuzz/corpus/<target>/ so the fuzzers
# start past the JSON and binary framing instead of discovering it byte by
# byte. Safe to re-run: it only (re)writes files named seed-*.
#
# Each seed is what the target's *plaintext* path takes (see
# crates/repo/src/fuzz.rs): stored objects are sealed with a per-process
# session key, so only the inner payloads can be seeded.
set -euo pipefail
cd "$(dirname "$0")"

seed() { mkdir -p "corpus/$1"; printf '%b' "$3" > "corpus/$1/seed-$2"; }
z64=0000000000000000000000000000000000000000000000000000000000000000
ones=0101010101010101010101010101010101010101010101010101010101010101

# key_file: cheap KDF parameters, so the target also runs the unlock path.
seed key_file full '{"version":1,"kind":"full","created":"2026-01-02T03:04:05Z","hostname":"h","username":"u","kdf":{"algorithm":"argon2id","version":19,"memory_kib":8,"iterations":1,"parallelism":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA=="},"data":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}'
seed key_file put-only '{"version":1,"kind":"put-only","created":"2026-01-02T03:04:05.5+01:00","hostname":"","username":"","kdf":{"algorithm":"argon2id","version":19,"memory_kib":64,"iterations":2,"parallelism":8,"salt":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},"data":""}'

# config: the JSON sealed inside `config`. The outer repository id is all
# zeros and the public key is the fuzz fixture's (master secret [42; 32]), so
# the first seed decodes completely.
fixture_pub=df1defa1cdf16f39e8adec55097f6025fb9677316fd6dfaf42dc14bd58061750
seed config valid "{\"version\":1,\"id\":\"$z64\",\"created\":\"2026-01-02T03:04:05Z\",\"chunker\":{\"algorithm\":\"fastcdc-2020-keyed-gear\",\"min_size\":524288,\"avg_size\":2097152,\"max_size\":8388608},\"compression\":{\"algorithm\":\"zstd\",\"level\":3},\"pack_size\":16777216,\"repository_public_key\":\"$fixture_pub\"}"
seed config version2 '{"version":2}'

# pack_header: the header plaintext after its compression byte:
# count u32, then type u8 | 0 0 0 | length u32 | raw length u32 | id (32).
id1=$(printf '\\x01%.0s' {1..32})
seed pack_header empty '\x00\x00\x00\x00'
seed pack_header one-blob "\x01\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x05\x00\x00\x00$id1"

# index: the index file payload (one superseded file, one pack of two blobs).
id9=$(printf '\\x09%.0s' {1..32}); id2=$(printf '\\x02%.0s' {1..32})
id3=$(printf '\\x03%.0s' {1..32}); id4=$(printf '\\x04%.0s' {1..32})
seed index empty '\x00\x00\x00\x00\x00\x00\x00\x00'
seed index sample "\x01\x00\x00\x00$id9\x01\x00\x00\x00$id1\x2c\x01\x00\x00\x00\x00\x00\x00$id2\x02\x00\x00\x00\x00\x00\x00\x00\x2c\x00\x00\x00\x64\x00\x00\x00\x50\x00\x00\x00$id3\x01\x00\x00\x00\x90\x00\x00\x00\x64\x00\x00\x00\x50\x00\x00\x00$id4"

# trash_record: a marking time, then an index-file body.
seed trash_record empty '\x00\x5e\x23\x69\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'

# blob: compression byte || payload (raw, and a zstd frame holding "hello").
seed blob raw '\x00hello'
seed blob zstd '\x01\x28\xb5\x2f\xfd\x20\x05\x29\x00\x00hello'

# snapshot: the JSON payload of a snapshot, with an unknown field.
seed snapshot full "{\"time\":\"2026-01-02T03:04:05.123456789Z\",\"tree\":\"$ones\",\"paths\":[\"/srv\"],\"hostname\":\"h\",\"username\":\"u\",\"tags\":[\"t\"],\"parent\":\"$z64\",\"program_version\":\"cairn 0.1.0\",\"future\":{\"a\":[1,-2,3.5,null,true]}}"
seed snapshot minimal "{\"time\":\"2026-01-02T03:04:05Z\",\"tree\":\"$ones\",\"paths\":[],\"hostname\":\"\",\"program_version\":\"\"}"

echo "seeds written under $(pwd)/corpus"

# tree: version 1 with no entries, and one FIFO named "a" (every other field
# zero or empty: 109 zero bytes after the kind byte).
seed tree empty '\x01\x00\x00\x00\x00'
zeros=$(printf '\\x00%.0s' {1..109})
seed tree fifo "\x01\x01\x00\x00\x00\x01\x00\x00\x00a\x03$zeros"

# bucket: an S3 listing page, and an escaped path.
seed bucket listing '<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated><Contents><Key>a%2Fb+c</Key><LastModified>2024-05-01T02:00:00.000Z</LastModified><ETag>&quot;e&quot;</ETag><Size>3</Size></Contents></ListBucketResult>'
seed bucket versions '<ListVersionsResult><Version><Key>k</Key><VersionId>v1</VersionId><LastModified>2024-01-01T00:00:00Z</LastModified><Size>1</Size></Version><DeleteMarker><Key>k</Key><VersionId>d</VersionId><LastModified>2024-01-02T00:00:00Z</LastModified></DeleteMarker></ListVersionsResult>'
seed bucket path 'dir/%/x%09y/%2E%2E/%='

# pg_cluster_manifest: an --all-databases cluster.json with database properties.
seed pg_cluster_manifest props '{"version":1,"kind":"postgresql-cluster","server_version":"15.18","server_version_num":150018,"started":"2026-12-01T15:01:10Z","finished":"2026-12-01T15:01:14Z","pg_dumpall_version":"pg_dumpall (PostgreSQL) 15.18","globals_file":"globals.sql","no_role_passwords":false,"databases":[{"name":"shop","dir":"databases/shop","owner":"o","encoding":"UTF8","collate":"C","ctype":"C","settings":[{"name":"search_path","value":"\\"$user\\", public"},{"role":"r","name":"work_mem","value":"8MB"}],"grants":[{"grantee":"r","privilege":"CONNECT","grantable":true},{"privilege":"TEMPORARY"}],"comment":"c","connection_limit":3}]}'
# dir_cache: the body after the magic (the target appends the checksum):
# settings (32), snapshot (32), one entry: key, early key, tree (32 each),
# files, dirs, bytes (u64 LE each), no subdirectory keys.
k32=$(printf '\\x07%.0s' {1..32})
seed dir_cache one "$k32$k32\x01\x00\x00\x00$k32$k32$k32\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
# pitr_backup_label: what pg_backup_stop returns.
seed pitr_backup_label primary 'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-06 01:40:00 UTC\nLABEL: cairn\nSTART TIMELINE: 1\n'
