#!/usr/bin/env bash
# bench/pgbench.sh — throughput and CPU cost of pgbaton, next to Postgres
# itself and PgBouncer (session pool mode).
#
# What it measures
#   pgbench's built-in select-only script (-S: one primary-key SELECT per
#   transaction) in the three query protocols (-M simple, extended, prepared)
#   at 1, 8 and 64 clients, against
#     A  the Postgres server directly (TCP on loopback),
#     B  pgbaton (release build, --auth trust) in front of that server,
#     C  PgBouncer, pool_mode = session, auth trust, in front of that server.
#   Select-only is the hardest case for a proxy: each transaction is tiny,
#   so the proxy's per-message cost is a large share of the total.
#
# Why interleave
#   This runs on a small shared machine (2 cores shared by pgbench, Postgres
#   and the proxy). Throughput drifts: caches warm, the host gets busy, CPU
#   frequency changes. Running A B C A B C ... for every configuration and
#   taking the median of ROUNDS rounds exposes all three targets to the same
#   drift, so the ratios stay meaningful even when absolute numbers wander.
#   Ratios are computed within each round (the three runs of one
#   configuration follow each other within seconds) and their median is
#   reported, which cancels more drift than a ratio of medians would.
#
# Why CPU per transaction
#   With 2 cores, every cycle the proxy burns is taken from pgbench and
#   Postgres, so TPS through a proxy is capped by its cost as much as by its
#   latency. The proxy's own CPU time (utime+stime from /proc/PID/stat,
#   fields 14 and 15, in clock ticks) before and after each run, divided by
#   the transactions pgbench reports, is a cost figure that is far less
#   sensitive to the noise of the shared machine than TPS is.
#
# Setup, all throwaway and removed on exit (also on Ctrl-C)
#   A private Postgres (initdb in a temp dir, ephemeral port, trust auth,
#   max_connections=250, fsync=off / synchronous_commit=off / full_page_writes
#   =off: this is a read-only benchmark, durability does not matter here),
#   initialised with `pgbench -i -s 10`, then pgbaton and PgBouncer on other
#   ephemeral loopback ports. Needs PostgreSQL 15 server binaries (initdb,
#   pg_ctl), pgbench and psql. Run as root (initdb and PgBouncer then run as
#   the `postgres` OS user) or as an ordinary user.
#
# Usage
#   bench/pgbench.sh                      # ROUNDS=3, DURATION=10 (~15 min)
#   QUICK=1 bench/pgbench.sh              # 1 round of 3 s: a smoke check
#   ROUNDS=5 DURATION=20 bench/pgbench.sh
# Environment
#   ROUNDS, DURATION   rounds and seconds per pgbench run
#   QUICK=1            ROUNDS=1 DURATION=3 (explicit ROUNDS/DURATION still win)
#   MODES, CLIENTS     default "simple extended prepared" and "1 8 64"
#   PGBATON_BIN        binary to use; default: `cargo build --release` and
#                      target/release/pgbaton
#   PGBIN              Postgres server binaries (default /usr/lib/postgresql/15/bin)
#   PGBOUNCER_BIN      PgBouncer binary (default: found in PATH or /usr/sbin)
#   NO_PGBOUNCER=1     skip PgBouncer entirely
#   KEEP=1             keep the temp dir (logs) instead of removing it
#   RUST_LOG           passed to pgbaton (default: warn)
#   PGBATON_TOML       extra pgbaton settings, as TOML lines, for example
#                      PGBATON_TOML='busy_poll = "0"'
#
# It exits non-zero only when something is broken (setup failed); a missed
# goal prints MISS and the script still exits 0.

set -euo pipefail

# ---------------------------------------------------------------- settings --

if [[ "${QUICK:-0}" == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-3}
else
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-10}
fi
MODES=${MODES:-"simple extended prepared"}
CLIENTS=${CLIENTS:-"1 8 64"}
SCALE=10
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
DB=bench
PGUSER_NAME=postgres   # the superuser initdb creates when run as `postgres`

# Goals (printed and checked at the end; a miss is reported, not fatal).
GOAL_VS_BOUNCER=1.30   # pgbaton TPS / PgBouncer TPS at 8 and 64 clients
GOAL_VS_DIRECT=0.80    # pgbaton TPS / direct TPS at 1 client

# ------------------------------------------------------------------- state --

WORK=""
PG_PORT="" BATON_PORT="" BOUNCER_PORT=""
PG_STARTED=0
BATON_PID="" BOUNCER_PID="" BOUNCER_JOB=""
HAVE_BOUNCER=0
LOAD_START=""
declare -A TPS=()   # "target mode clients" -> TPS of each round, space-separated
declare -A TPS_R=() # "target mode clients round" -> TPS of that round
declare -A CPU=()   # "target mode clients" -> proxy µs/txn of each round

# ----------------------------------------------------------------- helpers --

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [[ $(id -u) == 0 ]]; }

# Run a command as the `postgres` OS user when we are root (initdb, pg_ctl and
# PgBouncer refuse to run as root), from a directory it can read.
as_pg() {
    if is_root; then
        (cd "$WORK" && runuser -u postgres -- "$@")
    else
        (cd "$WORK" && "$@")
    fi
}

# A free TCP port on loopback from the ephemeral range: connecting to a port
# nobody listens on is refused at once.
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((49152 + RANDOM % 16000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            # not already handed out to another of our servers
            if [[ " $PG_PORT $BATON_PORT $BOUNCER_PORT " != *" $p "* ]]; then
                echo "$p"
                return
            fi
        fi
    done
    die "no free port found"
}

# Wait until a server on PORT answers a query (through a proxy this also
# proves the proxy reaches Postgres).
wait_ready() {
    local port=$1 what=$2 i
    for i in $(seq 1 100); do
        if psql -X -q -h 127.0.0.1 -p "$port" -U "$PGUSER_NAME" -d "$DB" \
            -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "$what on port $port did not answer within 10 s (logs in $WORK)"
}

# utime+stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the comm field can contain spaces, so count from the closing parenthesis).
cpu_ticks() {
    local stat rest
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    # after "pid (comm) " comes field 3 (state); utime is field 14
    awk '{ print $12 + $13 }' <<<"$rest"
}

median() {
    local v
    for v in $*; do echo "$v"; done | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) print v[(NR + 1) / 2]
            else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# Median over rounds of TARGET1/TARGET2 TPS for one mode and client count,
# each ratio taken within one round: the runs of one configuration follow
# each other within seconds, so this cancels most of the drift (other load on
# the machine) that the medians of TPS still carry.
paired_ratio() {
    local t1=$1 t2=$2 mode=$3 clients=$4 r a b list=""
    for r in $(seq 1 "$ROUNDS"); do
        a=${TPS_R[$t1 $mode $clients $r]:-}
        b=${TPS_R[$t2 $mode $clients $r]:-}
        [[ -n "$a" && -n "$b" ]] && list+="$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.6f", a / b }') "
    done
    median "$list"
}

fmt() { # number with given decimals, or "-"
    awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.*f\n", d, v }'
}

# --------------------------------------------------------- setup/teardown --

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$BATON_PID" ]]; then
        kill -TERM "$BATON_PID" 2>/dev/null
        wait "$BATON_PID" 2>/dev/null
    fi
    if [[ -n "$BOUNCER_PID" ]]; then
        kill -TERM "$BOUNCER_PID" 2>/dev/null
    fi
    if [[ -n "$BOUNCER_JOB" ]]; then
        wait "$BOUNCER_JOB" 2>/dev/null
    fi
    if [[ $PG_STARTED == 1 ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${KEEP:-0}" == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

check_tools() {
    [[ -x "$PGBIN/initdb" && -x "$PGBIN/pg_ctl" ]] ||
        die "no initdb/pg_ctl in $PGBIN (set PGBIN; Debian: apt-get install postgresql-15)"
    command -v pgbench >/dev/null || die "pgbench not found (Debian: apt-get install postgresql-client-15)"
    command -v psql >/dev/null || die "psql not found (Debian: apt-get install postgresql-client-15)"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
    fi
}

build_pgbaton() {
    if [[ -n "${PGBATON_BIN:-}" ]]; then
        [[ -x "$PGBATON_BIN" ]] || die "PGBATON_BIN=$PGBATON_BIN is not executable"
        return
    fi
    PGBATON_BIN=$REPO/target/release/pgbaton
    log "building pgbaton (cargo build --release)"
    if ! (cd "$REPO" && cargo build --release --quiet); then
        [[ -x "$PGBATON_BIN" ]] || die "cargo build --release failed and there is no $PGBATON_BIN"
        log "warning: build failed; using the existing $PGBATON_BIN"
    fi
}

find_pgbouncer() {
    [[ "${NO_PGBOUNCER:-0}" == 1 ]] && { log "PgBouncer skipped (NO_PGBOUNCER=1)"; return; }
    if [[ -z "${PGBOUNCER_BIN:-}" ]]; then
        PGBOUNCER_BIN=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v pgbouncer || true)
    fi
    if [[ -z "$PGBOUNCER_BIN" ]] && is_root && command -v apt-get >/dev/null; then
        log "PgBouncer is missing: apt-get install -y pgbouncer"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null || true
        fi
        PGBOUNCER_BIN=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v pgbouncer || true)
    fi
    if [[ -z "$PGBOUNCER_BIN" ]]; then
        log "warning: PgBouncer not found; running without it."
        log "  To include it: apt-get install pgbouncer (Debian/Ubuntu), then run this again,"
        log "  or set PGBOUNCER_BIN=/path/to/pgbouncer."
        return
    fi
    HAVE_BOUNCER=1
}

start_postgres() {
    PG_PORT=$(free_port)
    log "initdb + Postgres on 127.0.0.1:$PG_PORT (fsync=off: read-only benchmark)"
    as_pg "$PGBIN/initdb" -D "$WORK/data" -U "$PGUSER_NAME" --auth=trust \
        --no-sync -E UTF8 >"$WORK/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -5 "$WORK/initdb.log")"
    cat >>"$WORK/data/postgresql.conf" <<EOF

# bench/pgbench.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = 250
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 start >/dev/null ||
        die "Postgres did not start: $(tail -5 "$WORK/postgres.log")"
    PG_STARTED=1
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PGUSER_NAME" -d postgres \
        -c "create database $DB" >/dev/null
    log "pgbench -i -s $SCALE"
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U "$PGUSER_NAME" "$DB" \
        >"$WORK/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$WORK/pgbench-init.log")"
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PGUSER_NAME" -d "$DB" -c 'vacuum analyze' >/dev/null
}

start_pgbaton() {
    BATON_PORT=$(free_port)
    log "pgbaton on 127.0.0.1:$BATON_PORT ($PGBATON_BIN)"
    # Extra settings (PGBATON_TOML) go in a file; the flags override it.
    printf '%s\n' "${PGBATON_TOML:-}" >"$WORK/pgbaton.toml"
    RUST_LOG=${RUST_LOG:-warn} "$PGBATON_BIN" serve --config "$WORK/pgbaton.toml" \
        --listen "127.0.0.1:$BATON_PORT" --backend "pg1=127.0.0.1:$PG_PORT" --auth trust \
        2>"$WORK/pgbaton.log" &
    BATON_PID=$!
    wait_ready "$BATON_PORT" pgbaton
}

start_pgbouncer() {
    BOUNCER_PORT=$(free_port)
    log "PgBouncer (session mode) on 127.0.0.1:$BOUNCER_PORT ($PGBOUNCER_BIN)"
    printf '"%s" ""\n' "$PGUSER_NAME" >"$WORK/userlist.txt"
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 100
max_db_connections = 0
log_connections = 0
log_disconnections = 0
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
    if is_root; then chown postgres "$WORK"/userlist.txt "$WORK"/pgbouncer.ini; fi
    as_pg "$PGBOUNCER_BIN" -q "$WORK/pgbouncer.ini" 2>>"$WORK/pgbouncer.stderr" &
    BOUNCER_JOB=$!
    local i
    for i in $(seq 1 100); do
        [[ -s "$WORK/pgbouncer.pid" ]] && break
        sleep 0.1
    done
    [[ -s "$WORK/pgbouncer.pid" ]] ||
        die "PgBouncer did not start: $(tail -5 "$WORK/pgbouncer.log" "$WORK/pgbouncer.stderr" 2>/dev/null)"
    BOUNCER_PID=$(<"$WORK/pgbouncer.pid")
    wait_ready "$BOUNCER_PORT" PgBouncer
}

# ---------------------------------------------------------------- running --

port_of() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        pgbaton) echo "$BATON_PORT" ;;
        pgbouncer) echo "$BOUNCER_PORT" ;;
    esac
}

pid_of() {
    case $1 in
        pgbaton) echo "$BATON_PID" ;;
        pgbouncer) echo "$BOUNCER_PID" ;;
        *) echo "" ;;
    esac
}

# One pgbench run; records TPS and (for proxies) CPU µs per transaction.
run_one() {
    local target=$1 mode=$2 clients=$3 round=$4
    local port pid jobs out tps txns before after us key
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    jobs=$((clients < NCPU ? clients : NCPU))
    key="$target $mode $clients"
    [[ -n "$pid" ]] && before=$(cpu_ticks "$pid")
    if ! out=$(pgbench -n -S -M "$mode" -c "$clients" -j "$jobs" -T "$DURATION" \
        -h 127.0.0.1 -p "$port" -U "$PGUSER_NAME" "$DB" 2>&1); then
        log "round $round $target $mode c=$clients: pgbench FAILED:"
        tail -5 <<<"$out" | sed 's/^/    /' >&2
        printf '%s\n' "--- $key round $round" "$out" >>"$WORK/failures.log"
        return 0
    fi
    [[ -n "$pid" ]] && after=$(cpu_ticks "$pid")
    tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' <<<"$out")
    txns=$(awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' <<<"$out")
    if [[ -z "$tps" || -z "$txns" ]]; then
        log "round $round $target $mode c=$clients: cannot parse pgbench output"
        return 0
    fi
    TPS[$key]+="$tps "
    TPS_R[$key $round]=$tps
    us="-"
    if [[ -n "$pid" && "$txns" -gt 0 ]]; then
        us=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
        CPU[$key]+="$us "
    fi
    log "round $round/$ROUNDS  $(printf '%-9s %-8s c=%-2s' "$target" "$mode" "$clients")  tps=$(fmt "$tps" 0)${pid:+  cpu=${us}us/txn}"
}

run_all() {
    local targets=(direct pgbaton) round mode clients target
    [[ $HAVE_BOUNCER == 1 ]] && targets+=(pgbouncer)
    local nruns=$((ROUNDS * $(wc -w <<<"$MODES") * $(wc -w <<<"$CLIENTS") * ${#targets[@]}))
    log "$nruns runs of ${DURATION}s (about $((nruns * (DURATION + 1) / 60 + 1)) min), targets interleaved: ${targets[*]}"
    for round in $(seq 1 "$ROUNDS"); do
        for mode in $MODES; do
            for clients in $CLIENTS; do
                for target in "${targets[@]}"; do
                    run_one "$target" "$mode" "$clients" "$round"
                done
            done
        done
    done
}

# --------------------------------------------------------------- reporting --

med() { median "${1:-}"; }

report() {
    local mode clients d b p
    echo
    echo "pgbench -S (select-only), scale $SCALE, ${DURATION}s per run, median of $ROUNDS round(s)"
    echo "machine: $NCPU CPU(s) shared by pgbench, Postgres and the proxy; $(uname -sr)"
    echo "load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "pgbaton: $PGBATON_BIN${PGBATON_TOML:+ with $PGBATON_TOML}"
    [[ $HAVE_BOUNCER == 1 ]] && echo "pgbouncer: $("$PGBOUNCER_BIN" --version 2>/dev/null | head -1), pool_mode=session"
    echo
    echo "TPS: median of rounds; ratio: median of the per-round ratios; CPU: median"
    echo "TPS (median)                                         ratio pgbaton/       proxy CPU us/txn"
    printf '%-9s %7s %10s %10s %10s %9s %9s %10s %10s\n' \
        mode clients direct pgbaton pgbouncer direct pgbouncer pgbaton pgbouncer
    for mode in $MODES; do
        for clients in $CLIENTS; do
            d=$(med "${TPS[direct $mode $clients]:-}")
            b=$(med "${TPS[pgbaton $mode $clients]:-}")
            p=$(med "${TPS[pgbouncer $mode $clients]:-}")
            printf '%-9s %7s %10s %10s %10s %9s %9s %10s %10s\n' \
                "$mode" "$clients" "$(fmt "$d" 0)" "$(fmt "$b" 0)" "$(fmt "$p" 0)" \
                "$(fmt "$(paired_ratio pgbaton direct "$mode" "$clients")" 2)" \
                "$(fmt "$(paired_ratio pgbaton pgbouncer "$mode" "$clients")" 2)" \
                "$(fmt "$(med "${CPU[pgbaton $mode $clients]:-}")" 2)" \
                "$(fmt "$(med "${CPU[pgbouncer $mode $clients]:-}")" 2)"
        done
    done
    echo
    echo "per-round TPS (direct | pgbaton | pgbouncer):"
    for mode in $MODES; do
        for clients in $CLIENTS; do
            printf '  %-9s c=%-3s %s | %s | %s\n' "$mode" "$clients" \
                "$(rounds "${TPS[direct $mode $clients]:-}")" \
                "$(rounds "${TPS[pgbaton $mode $clients]:-}")" \
                "$(rounds "${TPS[pgbouncer $mode $clients]:-}")"
        done
    done
}

rounds() { # "123.4 567.8 " -> "123 568", or "-"
    if [[ -z "${1// /}" ]]; then echo "-"; return; fi
    awk '{ for (i = 1; i <= NF; i++) printf "%s%.0f", (i > 1 ? " " : ""), $i; print "" }' <<<"$1"
}

# verdict VALUE OP LIMIT -> PASS / MISS / "n/a"
verdict() {
    awk -v v="$1" -v op="$2" -v lim="$3" 'BEGIN {
        if (v == "-" || v == "") { print "n/a "; exit }
        ok = (op == ">=") ? (v + 0 >= lim + 0) : (v + 0 <= lim + 0)
        print ok ? "PASS" : "MISS" }'
}

goals() {
    local mode clients r cb cp
    echo
    echo "goals (a MISS is reported, not fatal):"
    echo "  G1  at 8 and 64 clients, pgbaton TPS >= ${GOAL_VS_BOUNCER}x PgBouncer (session mode)"
    echo "  G2  at 1 client, pgbaton TPS >= ${GOAL_VS_DIRECT}x direct"
    echo "  G3  pgbaton CPU per transaction at 8 clients, prepared <= PgBouncer's"
    for mode in $MODES; do
        for clients in $CLIENTS; do
            [[ $clients == 8 || $clients == 64 ]] || continue
            r=$(paired_ratio pgbaton pgbouncer "$mode" "$clients")
            if [[ $HAVE_BOUNCER == 1 ]]; then
                printf '  %s  G1 %-9s c=%-3s pgbaton/pgbouncer = %s (goal >= %s)\n' \
                    "$(verdict "$r" '>=' "$GOAL_VS_BOUNCER")" "$mode" "$clients" "$(fmt "$r" 2)" "$GOAL_VS_BOUNCER"
            else
                printf '  SKIP  G1 %-9s c=%-3s (no PgBouncer in this run)\n' "$mode" "$clients"
            fi
        done
    done
    for mode in $MODES; do
        [[ " $CLIENTS " == *" 1 "* ]] || continue
        r=$(paired_ratio pgbaton direct "$mode" 1)
        printf '  %s  G2 %-9s c=1   pgbaton/direct = %s (goal >= %s)\n' \
            "$(verdict "$r" '>=' "$GOAL_VS_DIRECT")" "$mode" "$(fmt "$r" 2)" "$GOAL_VS_DIRECT"
    done
    if [[ " $MODES " == *" prepared "* && " $CLIENTS " == *" 8 "* ]]; then
        if [[ $HAVE_BOUNCER == 1 ]]; then
            cb=$(med "${CPU[pgbaton prepared 8]:-}")
            cp=$(med "${CPU[pgbouncer prepared 8]:-}")
            printf '  %s  G3 prepared c=8   pgbaton %s us/txn vs PgBouncer %s us/txn (goal <=)\n' \
                "$(verdict "$cb" '<=' "$cp")" "$(fmt "$cb" 2)" "$(fmt "$cp" 2)"
        else
            echo "  SKIP  G3 (no PgBouncer in this run)"
        fi
    fi
    if [[ -s "$WORK/failures.log" ]]; then
        echo
        echo "some pgbench runs failed; their output:"
        sed 's/^/  /' "$WORK/failures.log"
    fi
}

# ------------------------------------------------------------------- main --

main() {
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    check_tools
    build_pgbaton
    find_pgbouncer
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/pgbaton-bench.XXXXXX)
    chmod 755 "$WORK"
    if is_root; then chown postgres "$WORK"; fi
    start_postgres
    start_pgbaton
    [[ $HAVE_BOUNCER == 1 ]] && start_pgbouncer
    run_all
    report
    goals
}

main "$@"
