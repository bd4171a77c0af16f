#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (see README.md and tests/database.py).
#
#   tests/pg_cluster.sh start DIR   initdb into DIR, listen on a Unix socket in DIR only (no TCP),
#                                   start it (fsync off: nothing in it outlives the tests; PG_FSYNC=on
#                                   for a benchmark that writes as a server would), and
#                                   print the server URL for VIPARE_TEST_DATABASE_URL
#   tests/pg_cluster.sh stop DIR    stop it (DIR is left for the caller to delete)
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the unprivileged user named by
# PG_CLUSTER_USER (default: postgres), who owns DIR; the tests connect to it as that user.
set -euo pipefail

command=${1:?usage: $0 start|stop DIR}
dir=$(realpath -m "${2:?usage: $0 start|stop DIR}")
bin=$(dirname "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")

if [ "$(id -u)" = 0 ]; then
  user=${PG_CLUSTER_USER:-postgres}
  as_user() { runuser -u "$user" -- "$@"; }
else
  user=$(id -un)
  as_user() { "$@"; }
fi

case "$command" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown "$user" "$dir"
      as_user test -w "$dir" || { echo "$user cannot reach $dir: make the folders above it searchable (chmod o+x)" >&2; exit 1; }
    fi
    as_user "$bin/initdb" --pgdata="$dir/data" --username="$user" --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log"
    as_user "$bin/pg_ctl" start --pgdata="$dir/data" --log="$dir/server.log" --wait --silent \
      --options="-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=300 -c fsync=${PG_FSYNC:-off}" \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql+psycopg://$user@/postgres?host=$dir"
    ;;
  stop)
    as_user "$bin/pg_ctl" stop --pgdata="$dir/data" --mode=fast --wait --silent
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
