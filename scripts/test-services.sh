#!/usr/bin/env bash
# Installs (from Debian) and starts what the serving tests talk to: PostgreSQL and Chromium.
# Prints the export line for RAGAR_TEST_POSTGRES_URL. Needs root (apt-get); `.ci/run` calls it,
# and a person can too: eval "$(sudo scripts/test-services.sh)".
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian" >&2
  # another apt (an interrupted earlier run's, the machine's own) may hold dpkg's lock: wait for it
  # rather than fail, which left CI without PostgreSQL once
  lock=(-o DPkg::Lock::Timeout=600)
  apt-get "${lock[@]}" update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}" >&2
fi
line=$(pg_lsclusters -h | head -n1)
if [ -z "$line" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -n1)
  pg_createcluster "$ver" main >&2
  line=$(pg_lsclusters -h | head -n1)
fi
ver=$(echo "$line" | awk '{print $1}')
cluster=$(echo "$line" | awk '{print $2}')
port=$(echo "$line" | awk '{print $3}')
pg_ctlcluster "$ver" "$cluster" start >&2 2>/dev/null || true
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2
psql_as_pg() { su postgres -c "psql -p $port -tAc \"$1\""; }
[ "$(psql_as_pg "SELECT 1 FROM pg_roles WHERE rolname='ragar'")" = "1" ] ||
  psql_as_pg "CREATE ROLE ragar LOGIN PASSWORD 'ragar' CREATEDB" >&2
[ "$(psql_as_pg "SELECT 1 FROM pg_database WHERE datname='ragar_test'")" = "1" ] ||
  psql_as_pg "CREATE DATABASE ragar_test OWNER ragar" >&2
echo "export RAGAR_TEST_POSTGRES_URL=postgresql+psycopg://ragar:ragar@127.0.0.1:${port}/ragar_test"
