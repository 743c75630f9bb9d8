#!/bin/bash
# The login rows with PostgreSQL on a CPU of its own (bench/README.md, "seventeenth session"):
# a private PostgreSQL server (initdb in a temporary directory, port 5433, pinned to the last
# CPU) and the harness with both Sesame processes pinned to the others. With --split the
# harness's load generator (its Tokio workers) moves to PostgreSQL's CPU once both Sesame
# processes have started, so Sesame has its CPUs alone, as behind a load balancer.
#
#   sudo bench/own-core.sh [--split] [ROUNDS]     (from the repository's root; Linux, root)
#
# Needs PostgreSQL's server binaries (Debian: postgresql-15; PG_BIN overrides where) and a
# release build of the harness (cargo build --release -p sesame-bench). Each round runs
# `--only login` for 5 s a row; the server is stopped and removed at the end.
set -euo pipefail

split=false
if [ "${1:-}" = "--split" ]; then
    split=true
    shift
fi
rounds=${1:-1}
pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
cpus=$(nproc)
if [ "$cpus" -lt 2 ]; then
    echo "needs at least two CPUs" >&2
    exit 2
fi
pg_cpu=$((cpus - 1))
sesame_cpus=0-$((cpus - 2))
port=5433

dir=$(mktemp -d)
chown postgres "$dir"
stop() {
    su postgres -c "$pg_bin/pg_ctl -D $dir/data -m fast stop" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
su postgres -c "$pg_bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
su postgres -c "taskset -c $pg_cpu $pg_bin/pg_ctl -D $dir/data -l $dir/log -w \
    -o '-p $port -k $dir -c listen_addresses=127.0.0.1' start" >/dev/null

for round in $(seq "$rounds"); do
    out=$dir/round-$round.txt
    taskset -c "$sesame_cpus" ./target/release/sesame-bench --duration 5 --only login \
        --database-url "postgres://postgres@127.0.0.1:$port/postgres" >"$out" 2>&1 &
    bench=$!
    if $split; then
        # Both Sesame processes are up once the first reference starts.
        until grep -q "raw argon2id (Sesame idle)" "$out" 2>/dev/null; do
            kill -0 "$bench" 2>/dev/null || break
            sleep 0.2
        done
        for task in /proc/$bench/task/*; do
            if grep -q '^tokio-rt-worker$' "$task/comm" 2>/dev/null; then
                taskset -pc "$pg_cpu" "$(basename "$task")" >/dev/null
            fi
        done
    fi
    wait "$bench"
    echo "round $round (PostgreSQL on CPU $pg_cpu, Sesame on $sesame_cpus, load generator" \
        "on $($split && echo "CPU $pg_cpu" || echo "$sesame_cpus")):"
    grep -E '^\| (raw argon2id, [0-9]+ threads|login)' "$out"
done
