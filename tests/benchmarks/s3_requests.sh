#!/usr/bin/env bash
# How many S3 requests does ballast make for 1 GiB of new data?
#
# Starts a single-node Garage server on loopback with a generated config, creates a
# key and a bucket, backs up 1 GiB of random (incompressible, unique) data with the
# release binary and prints the request counts ballast reports (`--json`). Then backs
# the same data up again (nothing new) and prints those counts too.
#
#   cargo build --release -p ballast && tests/benchmarks/s3_requests.sh [SIZE_MIB]
set -euo pipefail
size_mib=${1:-1024}
ballast=${BALLAST:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/ballast}
garage=$(command -v garage || echo "$HOME/.cargo/bin/garage")
work=$(mktemp -d /tmp/ballast-s3-requests.XXXXXX)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3=$(port); rpc=$(port)
cat > "$work/garage.toml" <<CONF
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
CONF
g() { "$garage" -c "$work/garage.toml" "$@"; }
# Started directly (not through g) so that $! is garage itself and the trap stops it.
RUST_LOG=warn "$garage" -c "$work/garage.toml" server > "$work/server.log" 2>&1 &
server=$!
until node=$(g status 2>/dev/null | awk '/HEALTHY NODES/{getline; getline; print $1}') && [ -n "$node" ]; do sleep 0.2; done
g layout assign -z dc1 -c 10G "$node" > /dev/null
g layout apply --version 1 > /dev/null
keyinfo=$(g key create bench)
g bucket create bench > /dev/null
g bucket allow --read --write --owner bench --key bench > /dev/null

export AWS_ACCESS_KEY_ID=$(awk '/Key ID:/{print $NF}' <<<"$keyinfo")
export AWS_SECRET_ACCESS_KEY=$(awk '/Secret key:/{print $NF}' <<<"$keyinfo")
export AWS_ENDPOINT=http://127.0.0.1:$s3 AWS_REGION=garage AWS_ALLOW_HTTP=true
export BALLAST_PASSWORD=bench BALLAST_REPO=s3://bench/repo

mkdir -p "$work/src"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/src/random.bin"
"$ballast" repo init > /dev/null
echo "first backup of ${size_mib} MiB of new data:"
"$ballast" backup path "$work/src" --json | python3 -c '
import json, sys
v = json.load(sys.stdin); s = v["snapshot"]["summary"]
print("  requests:", v["requests"]); print("  packs uploaded:", s["packs_uploaded"], " bytes stored:", s["bytes_stored"])'
echo "second backup (nothing new):"
"$ballast" backup path "$work/src" --json | python3 -c '
import json, sys
v = json.load(sys.stdin); print("  requests:", v["requests"])'
