#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) and the
# clients (psql, pgbench) are installed. On Debian/Ubuntu as root it installs
# the `postgresql` package; otherwise it says exactly what to install.
set -euo pipefail

have_server() {
  if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then return 0; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_server && command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found: installing Debian's postgresql package..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  # The package may start a cluster of its own; pgbaton's tests and demo never use it.
  exit 0
fi

cat >&2 <<'MSG'
pgbaton needs the PostgreSQL server binaries (initdb, pg_ctl, postgres) plus psql and pgbench.
  Debian/Ubuntu:  sudo apt-get install postgresql
  Fedora/RHEL:    sudo dnf install postgresql-server postgresql-contrib
  macOS:          brew install postgresql@15
Or point PG_BINDIR at a directory holding initdb and pg_ctl.
MSG
exit 1
