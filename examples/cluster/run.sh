#!/usr/bin/env bash
# Three Sesame nodes on one PostgreSQL and one Redis, behind nginx on
# 127.0.0.1:8420: the README's "Running several nodes", exactly. Needs
# `sesame` and `nginx` on the PATH and the database `sesame` to exist.
# Runs until Ctrl-C; with --check it signs in through nginx, checks that
# every node serves the token and that a logout reaches them all, and stops.
set -euo pipefail
cd "$(dirname "$0")"
run=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait || true; rm -rf "$run"' EXIT

# readme: begin
sesame --config sesame.toml migrate
for port in 8421 8422 8423; do
    sesame --config sesame.toml serve --listen 127.0.0.1:$port &
done
nginx -p "$run" -c "$PWD/nginx.conf" &
# readme: end

for port in 8420 8421 8422 8423; do
    for _ in $(seq 100); do
        curl -sf -o /dev/null "127.0.0.1:$port/healthz" && break
        sleep 0.1
    done
    curl -sf -o /dev/null "127.0.0.1:$port/healthz"
done
echo "three nodes behind nginx on 127.0.0.1:8420"

if [ "${1:-}" != "--check" ]; then
    wait
    exit 0
fi

echo 'correct horse battery' | sesame --config sesame.toml user add --username alice --password-stdin
grant=$(curl -sf 127.0.0.1:8420/v1/login -H 'content-type: application/json' \
    -d '{"login": "alice", "password": "correct horse battery"}')
access=$(sed -E 's/.*"access_token":"([^"]+)".*/\1/' <<<"$grant")
for port in 8421 8422 8423; do
    test "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/v1/me" -H "authorization: Bearer $access")" = 200
done
test "$(curl -s -o /dev/null -w '%{http_code}' -X POST 127.0.0.1:8420/v1/logout -H "authorization: Bearer $access")" = 204
for port in 8421 8422 8423; do
    test "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/v1/me" -H "authorization: Bearer $access")" = 401
done
echo "check passed: one token on every node, one logout refused everywhere"
