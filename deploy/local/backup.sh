#!/usr/bin/env bash
# Back up every database of the local stack with pg_dump (custom format) into
# BACKUP_DIR/<UTC timestamp>/, one file per database, plus a SHA256SUMS file.
# Usage: backup.sh [BACKUP_DIR]   (default: ./backups)
# TimescaleDB dumps restore with timescaledb_pre_restore()/post_restore() around
# pg_restore; restore and verification come in a later change.
SERVICE_NAME=backup
. "$(dirname "$0")/lib.sh"

dest_root=${1:-$REPO_DIR/backups}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dest="$dest_root/$stamp"
mkdir -p "$dest"
chmod 700 "$dest"

dump() {
  local port=$1 db=$2 out="$dest/$2.dump"
  log "pg_dump $db (port $port)"
  # Dump as the cluster superuser over the local socket; write as the caller.
  # pg_dump's messages go to a log beside the dump. TimescaleDB's catalog always
  # draws warnings about circular foreign keys (harmless for a full dump); any
  # other message is shown.
  as_service_user "$PG_BIN/pg_dump" -h "$RUN_DIR" -p "$port" -U postgres -Fc -d "$db" >"$out" 2>"$dest/$db.log" \
    || { cat "$dest/$db.log" >&2; die "pg_dump of $db failed"; }
  grep -vE 'circular foreign-key|^pg_dump: (detail|hint):' "$dest/$db.log" >&2 || true
  [ -s "$out" ] || die "pg_dump of $db produced nothing"
}

for db in auth portfolio analytics notifications; do dump 5432 "$db"; done
dump 5433 timescale
(cd "$dest" && sha256sum ./*.dump >SHA256SUMS)
size=$(du -sh "$dest" | cut -f1)
# Record a backup_done system event (table only; the shell has no Kafka client).
pg_sql 5433 timescale -v dest="$dest" -v size="$size" -v host="$(hostname)" <<'SQL' || log "could not record the backup_done event"
INSERT INTO system_events (time, event_id, component, event_type, severity, message, host, details)
VALUES (now(), gen_random_uuid(), 'ops.backup', 'backup_done', 'info', 'backup written to ' || :'dest', :'host',
        jsonb_build_object('path', :'dest', 'size', :'size'));
SQL
log "backup written to $dest ($size)"
echo "$dest"
