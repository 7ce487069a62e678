#!/usr/bin/env bash
# Makes sure what pgbaton needs beside Rust is installed:
#   build  protoc and the protobuf well-known types (the etcd client's gRPC
#          code is generated at build time), plus PostgreSQL (ensure-postgres.sh)
#   test   the above, and etcd (the fleet tests start their own etcd members)
# On Debian/Ubuntu as root it installs the packages; otherwise it says exactly
# what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

scripts/ensure-postgres.sh

missing=()
if ! command -v protoc >/dev/null 2>&1; then missing+=(protobuf-compiler); fi
if [ ! -e /usr/include/google/protobuf/descriptor.proto ] && [ -z "${PROTOC_INCLUDE:-}" ]; then
  missing+=(libprotobuf-dev)
fi
if [ "$what" = test ] && ! command -v etcd >/dev/null 2>&1; then missing+=(etcd-server); fi

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]}..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<MSG
pgbaton needs: ${missing[*]}
  Debian/Ubuntu:  sudo apt-get install ${missing[*]}
  Fedora/RHEL:    sudo dnf install protobuf-compiler protobuf-devel etcd
  macOS:          brew install protobuf etcd
(protoc and the protobuf headers build the etcd client; etcd runs the fleet tests.)
MSG
exit 1
