#!/usr/bin/env bash
# Restore a backup made by deploy/local/backup.sh (make db-backup) into EMPTY databases
# of the same names on the same ports.
#
# usage: restore.sh BACKUP_DIR [--database PORT/NAME]... [--create]
#
#   BACKUP_DIR              a folder backup.sh wrote (backups/<UTC time>)
#   --database PORT/NAME    restore only this database of the backup (repeatable)
#   --create                create a database that does not exist, with the owner and the
#                           database-level grants the backup recorded (TimescaleDB: and the
#                           extension); without it a missing database is refused
#
# Nothing is changed until every check has passed:
#   1. the checksums in SHA256SUMS (MANIFEST and every dump; a file missing or altered refuses all);
#   2. each target database is empty (no table, view, sequence, function or schema of its own;
#      what an extension installs does not count): restore never merges into data, so drop and
#      recreate a database first (e.g. DROP DATABASE, then deploy/local/stack.sh up, which
#      creates the stack's databases empty, or --create);
#   3. the owner role exists on the target cluster, and for TimescaleDB the same extension
#      version as in the backup is installed (TimescaleDB restores only into its own version).
# Then per database: pg_restore as the cluster superuser over the unix socket; for TimescaleDB,
# as its documentation prescribes, SELECT timescaledb_pre_restore() before and
# timescaledb_post_restore() after (also after a failure, so the database is not left in
# restoring mode); then ANALYZE. A failed restore leaves that database partly filled: drop it
# and run again.
SERVICE_NAME=restore
. "$(dirname "$0")/lib.sh"

usage() { # the comment block at the top of this file
  sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

backup=""
create=0
only=()
while [ $# -gt 0 ]; do
  case $1 in
    --database) only+=("${2:?--database needs PORT/NAME}"); shift 2 ;;
    --create) create=1; shift ;;
    -h | --help) usage ;;
    -*) echo "restore.sh: unknown option '$1'" >&2; usage ;;
    *) [ -z "$backup" ] || { echo "restore.sh: one BACKUP_DIR only" >&2; usage; }; backup=$1; shift ;;
  esac
done
[ -n "$backup" ] || usage
[ -d "$backup" ] || die "$backup is not a folder (make db-restore BACKUP=backups/<UTC time>)"
backup=$(cd "$backup" && pwd)
[ -f "$backup/MANIFEST" ] && [ -f "$backup/SHA256SUMS" ] ||
  die "$backup has no MANIFEST and SHA256SUMS: not a backup made by backup.sh"

# --- 1. checksums ---------------------------------------------------------------
log "verifying the checksums of $backup"
if ! failed=$(cd "$backup" && sha256sum --check --strict --quiet SHA256SUMS 2>&1); then
  printf '%s\n' "$failed" >&2
  die "checksum verification failed: the backup is damaged or incomplete; nothing was restored"
fi
listed() { grep -qE "^[0-9a-f]{64} [ *](\./)?$1\$" "$backup/SHA256SUMS"; }
listed MANIFEST || die "SHA256SUMS does not cover MANIFEST; nothing was restored"
[ "$(awk -F'\t' '$1 == "format" {print $2}' "$backup/MANIFEST")" = 1 ] ||
  die "MANIFEST is of an unknown format; nothing was restored"

# The databases of the backup (manifest lines: database PORT NAME OWNER FILE BYTES TS_VERSION LICENSE SERVER_VERSION).
mapfile -t entries < <(awk -F'\t' '$1 == "database"' "$backup/MANIFEST")
[ ${#entries[@]} -gt 0 ] || die "MANIFEST lists no database"
selected=()
for entry in "${entries[@]}"; do
  IFS=$'\t' read -r _ port db _ file _ <<<"$entry"
  listed "$file" || die "SHA256SUMS does not cover $file; nothing was restored"
  if [ ${#only[@]} -eq 0 ] || printf '%s\n' "${only[@]}" | grep -qxF "$port/$db"; then selected+=("$entry"); fi
done
for wanted in "${only[@]}"; do
  printf '%s\n' "${entries[@]}" | awk -F'\t' '{print $2 "/" $3}' | grep -qxF "$wanted" ||
    die "the backup holds no database $wanted (it has: $(printf '%s\n' "${entries[@]}" | awk -F'\t' '{printf "%s/%s ", $2, $3}'))"
done

# --- 2. and 3. the targets ------------------------------------------------------

# What a database holds besides what extensions installed: "12 relations, 3 functions (public.stock_prices, ...)".
contents() {
  pg_sql "$1" "$2" -At <<'SQL'
WITH own AS (
  SELECT 'tables, views or sequences' AS kind, format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'functions or procedures', format('%I.%I', n.nspname, p.proname)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'schemas', format('%I', n.nspname)
    FROM pg_namespace n
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname !~ '^pg_'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
)
SELECT string_agg(format('%s %s', n, kind), ', ') || ', such as ' ||
       (SELECT string_agg(name, ', ') FROM (SELECT name FROM own ORDER BY name ~ '^_', kind DESC, name LIMIT 5) s)
  FROM (SELECT kind, count(*) AS n FROM own GROUP BY kind ORDER BY kind DESC) k
 HAVING count(*) > 0
SQL
}

problems=()
for entry in "${selected[@]}"; do
  IFS=$'\t' read -r _ port db owner file _ ts_version _ <<<"$entry"
  if ! pg_sql "$port" postgres -At -c 'SELECT 1' >/dev/null 2>&1; then
    problems+=("port $port: no PostgreSQL answers (deploy/local/stack.sh up)")
    continue
  fi
  exists=$(pg_sql "$port" postgres -At -v db="$db" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")
  if [ "$exists" = 1 ]; then
    held=$(contents "$port" "$db")
    [ -z "$held" ] || problems+=("$db (port $port) is not empty: it holds $held")
  elif [ "$create" -eq 0 ]; then
    problems+=("$db (port $port) does not exist: create it empty (deploy/local/stack.sh up creates the stack's) or pass --create")
  fi
  role=$(pg_sql "$port" postgres -At -v role="$owner" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'role'")
  [ "$role" = 1 ] || problems+=("$db (port $port): its owner role $owner does not exist (deploy/local/stack.sh up creates the stack's roles)")
  if [ "$ts_version" != - ]; then
    if [ "$exists" = 1 ]; then
      have=$(pg_sql "$port" "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    else
      have=""
    fi
    if [ -n "$have" ] && [ "$have" != "$ts_version" ]; then
      problems+=("$db (port $port) has TimescaleDB $have, the backup needs $ts_version (the same version, as TimescaleDB requires)")
    elif [ -z "$have" ]; then
      available=$(pg_sql "$port" postgres -At -v v="$ts_version" \
        <<<"SELECT 1 FROM pg_available_extension_versions WHERE name = 'timescaledb' AND version = :'v'")
      [ "$available" = 1 ] || problems+=("port $port: TimescaleDB $ts_version, which the backup of $db needs, is not installed")
    fi
  fi
done
if [ ${#problems[@]} -gt 0 ]; then
  printf '[restore] refused, nothing was changed:\n' >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi

# --- 4. restore ---------------------------------------------------------------

# A line every 5 s while pg_restore runs, from its --verbose log: tables whose data
# it has loaded, then the indexes and constraints it builds after the data.
show_progress() {
  local pid=$1 what=$2 log_file=$3 tables=$4 indexes=$5 started=$SECONDS next=$((SECONDS + 5))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    if ((SECONDS >= next)); then
      log "$what: data of $(grep -c 'processing data for table' "$log_file" 2>/dev/null || true) of $tables tables," \
        "$(grep -cE 'creating (FK )?(INDEX|CONSTRAINT)' "$log_file" 2>/dev/null || true) of $indexes indexes and constraints," \
        "$((SECONDS - started)) s"
      next=$((SECONDS + 5))
    fi
  done
}

create_database() {
  local port=$1 db=$2 owner=$3 grantee privilege
  log "creating $db (port $port) owned by $owner"
  pg_sql "$port" postgres -v db="$db" -v owner="$owner" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
  while IFS=$'\t' read -r grantee privilege; do
    [ -n "$grantee" ] || continue
    pg_sql "$port" postgres -v db="$db" -v grantee="$grantee" -v privilege="$privilege" <<'SQL' ||
SELECT format('GRANT %s ON DATABASE %I TO %s', :'privilege', :'db',
              CASE WHEN :'grantee' = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(:'grantee') END)
 WHERE :'privilege' IN ('CONNECT', 'CREATE', 'TEMPORARY') \gexec
SQL
      log "could not grant $privilege on $db to $grantee (does the role exist?)"
  done < <(awk -F'\t' -v p="$port" -v d="$db" '$1 == "grant" && $2 == p && $3 == d {print $4 "\t" $5}' "$backup/MANIFEST")
}

restore_one() {
  local port=$1 db=$2 owner=$3 file=$4 ts_version=$5 started=$SECONDS
  local err tables rc=0
  err=$(mktemp)
  exists=$(pg_sql "$port" postgres -At -v db="$db" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")
  [ "$exists" = 1 ] || create_database "$port" "$db" "$owner"
  local listing indexes
  listing=$(as_service_user "$PG_BIN/pg_restore" -l <"$backup/$file")
  tables=$(grep -c ' TABLE DATA ' <<<"$listing" || true)
  indexes=$(grep -cE ' (FK )?(INDEX|CONSTRAINT) ' <<<"$listing" || true)
  local what="$tables tables with data, $indexes indexes and constraints"
  [ "$ts_version" = - ] || what+=", TimescaleDB $ts_version"
  log "pg_restore $file into $db (port $port): $what"
  if [ "$ts_version" != - ]; then
    pg_sql "$port" "$db" -v v="$ts_version" <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE EXTENSION IF NOT EXISTS timescaledb VERSION %L', :'v') \gexec
SELECT timescaledb_pre_restore() \g /dev/null
SQL
  fi
  # The dump reaches pg_restore on stdin: the backup folder is private to its owner.
  as_service_user "$PG_BIN/pg_restore" -h "$RUN_DIR" -p "$port" -U postgres -d "$db" --exit-on-error -v \
    <"$backup/$file" 2>"$err" &
  local pid=$!
  show_progress "$pid" "pg_restore $db" "$err" "$tables" "$indexes"
  wait "$pid" || rc=$?
  if [ "$ts_version" != - ]; then
    pg_sql "$port" "$db" -c 'SELECT timescaledb_post_restore()' >/dev/null ||
      log "timescaledb_post_restore() failed in $db: run it by hand before using the database"
  fi
  if [ "$rc" -ne 0 ]; then
    grep -E '^pg_restore: (error|warning)' "$err" | tail -n 20 >&2 || tail -n 20 "$err" >&2
    rm -f "$err"
    die "pg_restore of $db (port $port) failed: it is partly restored now; drop it, recreate it empty and try again"
  fi
  grep -E '^pg_restore: warning' "$err" >&2 || true
  rm -f "$err"
  pg_sql "$port" "$db" -c 'ANALYZE' >/dev/null
  log "$db restored in $((SECONDS - started)) s"
}

started=$SECONDS
for entry in "${selected[@]}"; do
  IFS=$'\t' read -r _ port db owner file _ ts_version _ <<<"$entry"
  restore_one "$port" "$db" "$owner" "$file" "$ts_version"
done
log "restored ${#selected[@]} databases from $backup in $((SECONDS - started)) s"
