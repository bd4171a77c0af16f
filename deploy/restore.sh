#!/usr/bin/env bash
# Restore a backup made by deploy/backup.sh into an empty data folder (and an empty PostgreSQL database).
#
#   deploy/restore.sh [--data-dir DIR] [--database-url URL] BACKUP
#
# BACKUP is one dated folder (DEST/vipare-<UTC time>). DIR and URL default to VIPARE_DATA_DIR and
# VIPARE_DATABASE_URL. Stop the service first. The script
#   1. checks every file of the backup against SHA256SUMS;
#   2. refuses a data folder that holds anything, or a PostgreSQL database that has tables;
#   3. unpacks data.tar into DIR and checks every file against files.sha256;
#   4. puts the database back: database.sqlite as DIR/vipare.db (or the file of a sqlite:/// URL),
#      database.pgdump with pg_restore into URL's database (create it empty first: createdb -O vipare vipare).
# A PostgreSQL backup restores into PostgreSQL and an SQLite one into SQLite. Then start the service:
# it finds the schema at its revision, or migrates a backup of an older version forward.
set -euo pipefail
umask 077

usage() { echo "usage: $0 [--data-dir DIR] [--database-url URL] BACKUP" >&2; exit 2; }

data_dir=${VIPARE_DATA_DIR:-}
database_url=${VIPARE_DATABASE_URL:-}
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) data_dir=${2:?}; shift 2 ;;
    --database-url) database_url=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
backup=$(cd "$1" && pwd)
[ -n "$data_dir" ] || { echo "restore: no data folder: give --data-dir or set VIPARE_DATA_DIR" >&2; exit 2; }

# 1. the backup is whole
[ -f "$backup/SHA256SUMS" ] || { echo "restore: $backup has no SHA256SUMS: not a complete backup" >&2; exit 1; }
(cd "$backup" && sha256sum --check --quiet --strict SHA256SUMS) ||
  { echo "restore: $backup does not match its SHA256SUMS: a damaged backup; take another one" >&2; exit 1; }
if [ -f "$backup/database.pgdump" ]; then kind=postgresql; else kind=sqlite; fi

# 2. the targets are empty
if [ -d "$data_dir" ] && [ -n "$(ls -A "$data_dir")" ]; then
  echo "restore: $data_dir is not empty; restore into an empty folder (move the old one aside first)" >&2; exit 1
fi
case $database_url in
  postgresql*|postgres*)
    [ "$kind" = postgresql ] || { echo "restore: $backup holds an SQLite database; unset the database URL" >&2; exit 1; }
    libpq_url=$(printf '%s' "$database_url" | sed -E 's#^postgres(ql)?\+[a-z0-9_]+://#postgresql://#')
    tables=$(psql --no-psqlrc --tuples-only --no-align --dbname="$libpq_url" \
      --command="SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
    [ "$tables" = 0 ] || { echo "restore: the database already has $tables tables; restore into an empty one" >&2; exit 1; }
    ;;
  ''|sqlite:*)
    [ "$kind" = sqlite ] || { echo "restore: $backup holds a PostgreSQL dump; set the database URL" >&2; exit 1; }
    if [ -n "$database_url" ]; then db=${database_url#sqlite:///}; else db=$data_dir/vipare.db; fi
    [ ! -e "$db" ] || { echo "restore: $db exists; restore into an empty place" >&2; exit 1; }
    ;;
  *) echo "restore: cannot restore into ${database_url%%:*}:... (PostgreSQL or SQLite only)" >&2; exit 1 ;;
esac

# 3. the data folder
mkdir -p "$data_dir"
chmod 700 "$data_dir"
tar --extract --file="$backup/data.tar" --directory="$data_dir" --same-permissions
(cd "$data_dir" && sha256sum --check --quiet --strict "$backup/files.sha256") ||
  { echo "restore: files unpacked into $data_dir differ from the backup's files.sha256" >&2; exit 1; }

# 4. the database
if [ "$kind" = postgresql ]; then
  pg_restore --no-owner --no-privileges --exit-on-error --single-transaction --dbname="$libpq_url" \
    "$backup/database.pgdump"
else
  mkdir -p "$(dirname "$db")"
  cp "$backup/database.sqlite" "$db.restoring"
  mv "$db.restoring" "$db"
fi
echo "restore: $backup -> $data_dir ($kind, $(wc -l < "$backup/files.sha256") files); start the service"
