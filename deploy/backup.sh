#!/usr/bin/env bash
# Back up a vipare store (its database and its data folder) into a dated folder with checksums.
#
#   deploy/backup.sh [--data-dir DIR] [--database-url URL] [--keep N] DEST
#
# DIR and URL default to VIPARE_DATA_DIR and VIPARE_DATABASE_URL (the service's environment file);
# without a URL the database is the SQLite file DIR/vipare.db. Safe while the service runs:
#   1. the database first: pg_dump -Fc (one snapshot), or SQLite's online backup API (a consistent
#      copy even while workers write);
#   2. then the data folder (photos, promoted models, address index), as data.tar. A photo is on disk
#      before the row that names it is committed, so every photo the copied database refers to is
#      in the tar; files written since are unreferenced and removed by the service's start-up sweep.
# DEST/vipare-<UTC time>/ then holds database.sqlite or database.pgdump, data.tar, files.sha256 (each
# file inside the tar), MANIFEST and SHA256SUMS; it is written as DEST/.partial-* and renamed when
# complete. --keep N deletes the oldest complete backups beyond N. Restore with deploy/restore.sh.
# With VIPARE_PHOTO_STORE=s3://bucket/prefix the photos are not in the data folder and not in the
# backup (MANIFEST names the bucket): the bucket keeps them through the store's own versioning or
# replication, and a photo older than the database snapshot is there as long as those keep it.
set -euo pipefail
umask 077

usage() { echo "usage: $0 [--data-dir DIR] [--database-url URL] [--keep N] DEST" >&2; exit 2; }

data_dir=${VIPARE_DATA_DIR:-}
database_url=${VIPARE_DATABASE_URL:-}
keep=0
python=${VIPARE_BACKUP_PYTHON:-python3}
while [ $# -gt 0 ]; do
  case $1 in
    --data-dir) data_dir=${2:?}; shift 2 ;;
    --database-url) database_url=${2:?}; shift 2 ;;
    --keep) keep=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
dest=$1
[ -n "$data_dir" ] || { echo "backup: no data folder: give --data-dir or set VIPARE_DATA_DIR" >&2; exit 2; }
[ -d "$data_dir" ] || { echo "backup: $data_dir is not a folder" >&2; exit 1; }
case $keep in ''|*[!0-9]*) echo "backup: --keep takes a number, not $keep" >&2; exit 2 ;; esac

stamp=$(date -u +%Y%m%dT%H%M%SZ)
name=vipare-$stamp
mkdir -p "$dest"
work=$dest/.partial-$name
rm -rf "$work"
mkdir "$work"
trap 'rm -rf "$work"' EXIT

# 1. the database
case $database_url in
  postgresql*|postgres*)
    kind=postgresql
    # libpq reads postgresql://...; SQLAlchemy's driver suffix (+psycopg) is not part of it
    libpq_url=$(printf '%s' "$database_url" | sed -E 's#^postgres(ql)?\+[a-z0-9_]+://#postgresql://#')
    pg_dump --format=custom --no-owner --no-privileges --file="$work/database.pgdump" --dbname="$libpq_url"
    database_file=database.pgdump
    ;;
  ''|sqlite:*)
    kind=sqlite
    if [ -n "$database_url" ]; then db=${database_url#sqlite:///}; else db=$data_dir/vipare.db; fi
    [ -f "$db" ] || { echo "backup: no SQLite database at $db" >&2; exit 1; }
    "$python" - "$db" "$work/database.sqlite" <<'PY'
import sqlite3, sys
source = sqlite3.connect(sys.argv[1], timeout=60)
target = sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)  # one consistent snapshot, even while the service writes (WAL)
(ok,) = target.execute("PRAGMA integrity_check").fetchone()
if ok != "ok":
    sys.exit(f"backup: the copied database fails its integrity check: {ok}")
target.execute("PRAGMA journal_mode=DELETE")
target.close(); source.close()
PY
    database_file=database.sqlite
    ;;
  *) echo "backup: cannot back up a database at ${database_url%%:*}:... (PostgreSQL or SQLite only)" >&2; exit 1 ;;
esac

# 2. the data folder, without the database, its journals, half-written files, locks and caches
status=0
tar --create --file="$work/data.tar" --directory="$data_dir" --sparse \
    --exclude=./vipare.db --exclude=./vipare.db-wal --exclude=./vipare.db-shm --exclude=./vipare.db-journal \
    --exclude='.tmp-*' --exclude=./.workers.lock --exclude=./cache \
    --warning=no-file-changed --warning=no-file-removed --ignore-failed-read . || status=$?
# 1: a file changed or went while it was read (an upload or a purge in flight); anything more is an error
[ "$status" -le 1 ] || { echo "backup: tar failed ($status)" >&2; exit 1; }

"$python" - "$work/data.tar" > "$work/files.sha256" <<'PY'
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    for member in archive:
        if member.isfile():
            digest = hashlib.sha256()
            with archive.extractfile(member) as data:
                for chunk in iter(lambda: data.read(1 << 20), b""):
                    digest.update(chunk)
            print(f"{digest.hexdigest()}  {member.name}")
PY

{
  echo "vipare backup $stamp"
  echo "host: $(hostname)"
  echo "database: $kind ($database_file)"
  echo "data folder: $data_dir"
  if [ -n "${VIPARE_PHOTO_STORE:-}" ]; then
    echo "photos: $VIPARE_PHOTO_STORE (not in this backup: the bucket's versioning or replication keeps them)"
  fi
  echo "files: $(wc -l < "$work/files.sha256")"
} > "$work/MANIFEST"
(cd "$work" && sha256sum "$database_file" data.tar files.sha256 MANIFEST > SHA256SUMS)

sync -f "$work" 2>/dev/null || sync
mv "$work" "$dest/$name"
trap - EXIT
echo "backup: $dest/$name ($kind, $(wc -l < "$dest/$name/files.sha256") files)"

if [ "$keep" -gt 0 ]; then
  # complete backups only (a .partial-* folder is never one), oldest first by their names' UTC time
  find "$dest" -mindepth 1 -maxdepth 1 -type d -name 'vipare-*' -printf '%f\n' | sort | head -n "-$keep" |
    while read -r old; do rm -rf -- "${dest:?}/$old"; echo "backup: removed $dest/$old"; done
fi
