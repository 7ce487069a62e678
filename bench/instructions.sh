#!/usr/bin/env bash
# bench/instructions.sh — instructions and system calls pgbaton spends per
# transaction, counted rather than timed.
#
# Why count
#   CPU time per transaction (bench/pgbench.sh) moves by 5% between runs on a
#   shared 2-core machine, which hides a change of a few percent. Valgrind's
#   callgrind counts the instructions the proxy executes: the same binary and
#   workload give the same count within 0.1%, whatever else the machine does.
#   strace -c counts the system calls, the part of the cost callgrind does not
#   see. To leave out start-up and logins, each figure is the difference
#   between a run of T1 and one of T2 transactions per client, divided by the
#   extra transactions.
#
# Usage
#   bench/instructions.sh                          # target/release/pgbaton
#   BASELINE_BIN=/path/old/pgbaton bench/instructions.sh   # old next to new
# Environment
#   PGBATON_BIN   binary measured (default: cargo build --release)
#   BASELINE_BIN  a second binary measured the same way, e.g. a build of main
#   MODES         default "simple prepared"
#   CLIENTS       default 8;  T1, T2: transactions per client (500, 2500)
#   PGBIN         Postgres server binaries (default /usr/lib/postgresql/15/bin)
# Needs valgrind and strace (Debian packages of those names), pgbench, psql.
# Busy polling is off: a spinning worker's instructions depend on timing.

set -euo pipefail

MODES=${MODES:-"simple prepared"}
CLIENTS=${CLIENTS:-8}
T1=${T1:-500}
T2=${T2:-2500}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

for tool in valgrind strace pgbench psql callgrind_annotate; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing (apt-get install -y valgrind strace postgresql-client)" >&2
        exit 1
    }
done

WORK=$(mktemp -d)
PG_PORT=$((49152 + RANDOM % 8000))
PROXY_PORT=$((PG_PORT + 8000))
as_pg() { if [[ $(id -u) == 0 ]]; then (cd "$WORK" && runuser -u postgres -- "$@"); else "$@"; fi; }
cleanup() {
    set +e
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
[[ $(id -u) == 0 ]] && chown postgres "$WORK"

if [[ -z "${PGBATON_BIN:-}" ]]; then
    (cd "$REPO" && cargo build --release --quiet)
    PGBATON_BIN="$REPO/target/release/pgbaton"
fi

as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
pgbench -q -i -s 2 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1

cat >"$WORK/pgbaton.toml" <<EOF
listen = "127.0.0.1:$PROXY_PORT"
auth = "trust"
busy_poll = "0"
[[backends]]
name = "pg1"
host = "127.0.0.1"
port = $PG_PORT
EOF

# One run of the proxy under TOOL ("callgrind" or "strace") with T
# transactions per client; prints the instructions or the system calls.
run() {
    local bin=$1 tool=$2 mode=$3 t=$4 pid i
    if [[ $tool == callgrind ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
            "$bin" serve --config "$WORK/pgbaton.toml" >"$WORK/proxy.log" 2>&1 &
    else
        strace -f -c -o "$WORK/strace.out" \
            "$bin" serve --config "$WORK/pgbaton.toml" >"$WORK/proxy.log" 2>&1 &
    fi
    pid=$!
    for i in $(seq 1 200); do
        psql -X -q -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -c 'select 1' postgres \
            >/dev/null 2>&1 && break
        sleep 0.1
    done
    pgbench -n -S -M "$mode" -c "$CLIENTS" -j 2 -t "$t" \
        -h 127.0.0.1 -p "$PROXY_PORT" -U postgres postgres >"$WORK/pgbench.log" 2>&1 ||
        { cat "$WORK/pgbench.log" >&2; exit 1; }
    if [[ $tool == callgrind ]]; then
        kill -TERM "$pid"
        wait "$pid" || true
        callgrind_annotate "$WORK/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
    else
        # strace forwards nothing on its own: stop the traced proxy itself.
        kill -TERM "$(pgrep -P "$pid")"
        wait "$pid" || true
        awk '$NF == "total" { print $4 }' "$WORK/strace.out"
    fi
}

# (count at T2 - count at T1) / extra transactions, with $3 decimals.
per_txn() { awk -v a="$1" -v b="$2" -v d="$3" -v n="$(( (T2 - T1) * CLIENTS ))" 'BEGIN { printf "%.*f", d, (b - a) / n }'; }

printf '%-10s %-9s %14s %14s\n' binary mode instr/txn syscalls/txn
for mode in $MODES; do
    for bin in ${BASELINE_BIN:+"$BASELINE_BIN"} "$PGBATON_BIN"; do
        name=$([[ $bin == "${BASELINE_BIN:-}" ]] && echo baseline || echo measured)
        ir=$(per_txn "$(run "$bin" callgrind "$mode" "$T1")" "$(run "$bin" callgrind "$mode" "$T2")" 0)
        sc=$(per_txn "$(run "$bin" strace "$mode" "$T1")" "$(run "$bin" strace "$mode" "$T2")" 2)
        printf '%-10s %-9s %14s %14s\n' "$name" "$mode" "$ir" "$sc"
    done
done
