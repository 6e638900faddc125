#!/usr/bin/env bash
# Back up the local stack's databases: pg_dump's custom format (-Fc), one file per
# database, into a new folder DEST/<UTC time>/ with a MANIFEST and SHA256SUMS.
# deploy/local/restore.sh (make db-restore BACKUP=<folder>) restores one.
#
# usage: backup.sh [--dest DIR] [--keep N] [--database PORT/NAME]... [--no-event]
#
#   --dest DIR              where the timestamped folders go (default: NEXANEST_BACKUP_DIR from the
#                           environment or .env, else backups/ in the clone)
#   --keep N                after a successful backup keep the newest N backups in DIR and delete the
#                           older ones (default 7; 0 keeps every one). Only complete backups count.
#   --database PORT/NAME    back up this database only (repeatable), e.g. --database 5433/timescale
#   --no-event              do not record a backup_done system event
#
# By default: auth, portfolio, analytics and notifications on PostgreSQL (5432), timescale on
# TimescaleDB (5433), and timescale on the community cluster (5434) when it runs. The test
# suite's *_test databases are not backed up.
#
# TimescaleDB follows its documented procedure: a plain pg_dump of the whole database
# (hypertables are dumped as their chunks, with the extension's catalog), restored with
# timescaledb_pre_restore() / timescaledb_post_restore() around pg_restore into a database
# with the same TimescaleDB version; MANIFEST records the version. Dumps run as the cluster
# superuser over the unix socket (no password anywhere). A backup is written into
# <UTC time>.partial and renamed only once complete, so a failed one never replaces a good one.
# On success the folder's path is the one line on stdout; progress goes to stderr.
SERVICE_NAME=backup
. "$(dirname "$0")/lib.sh"

usage() { # the comment block at the top of this file
  sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

dest_root=$(env_setting NEXANEST_BACKUP_DIR "$REPO_DIR/backups")
keep=7
record_event=1
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --dest) dest_root=${2:?--dest needs a directory}; shift 2 ;;
    --keep) keep=${2:?--keep needs a number}; shift 2 ;;
    --database) targets+=("${2:?--database needs PORT/NAME}"); shift 2 ;;
    --no-event) record_event=0; shift ;;
    -h | --help) usage ;;
    *) echo "backup.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ $keep =~ ^[0-9]+$ ]] || die "--keep takes a whole number, not '$keep'"
if [ ${#targets[@]} -eq 0 ]; then
  targets=(5432/auth 5432/portfolio 5432/analytics 5432/notifications 5433/timescale)
  if [ -f "$STATE_DIR/timescaledb-community/PG_VERSION" ] && port_open 5434; then targets+=(5434/timescale); fi
fi
for target in "${targets[@]}"; do
  [[ $target =~ ^[0-9]+/[A-Za-z0-9_][A-Za-z0-9_-]*$ ]] || die "--database takes PORT/NAME (e.g. 5433/timescale), not '$target'"
done

cluster_name() {
  case $1 in
    5432) echo postgres ;;
    5433) echo timescaledb ;;
    5434) echo timescaledb-community ;;
    *) echo "port-$1" ;;
  esac
}

# Refuse before writing anything: every cluster answers and every database exists.
for target in "${targets[@]}"; do
  port=${target%%/*} db=${target#*/}
  pg_sql "$port" postgres -At -c 'SELECT 1' >/dev/null 2>&1 ||
    die "$(cluster_name "$port") on port $port does not answer (make db-status; deploy/local/stack.sh up)"
  found=$(pg_sql "$port" postgres -At -v db="$db" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")
  [ "$found" = 1 ] || die "there is no database $db on port $port"
done

mkdir -p "$dest_root"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
name=$stamp n=1
while [ -e "$dest_root/$name" ] || [ -e "$dest_root/$name.partial" ]; do n=$((n + 1)); name="$stamp-$n"; done
dest="$dest_root/$name"
work="$dest.partial"
mkdir -p "$work"
chmod 700 "$work"
# A failure anywhere below removes the incomplete folder (its errors were shown).
trap 'if [ -d "$work" ]; then rm -rf -- "$work"; log "failed: removed the incomplete $work"; fi' EXIT

manifest="$work/MANIFEST"
{
  echo "# nexanest backup: one line per database (tab-separated), read by deploy/local/restore.sh"
  printf 'format\t1\n'
  printf 'created\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'host\t%s\n' "$(hostname)"
} >"$manifest"

# A line every few seconds while pg_dump or pg_restore runs: how many tables it has
# done (from its --verbose log) out of about how many there are, and the bytes written.
show_progress() {
  local pid=$1 what=$2 log_file=$3 pattern=$4 total=$5 out=${6:-} started=$SECONDS next=$((SECONDS + 5))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    if ((SECONDS >= next)); then
      local done_tables size=""
      done_tables=$(grep -c "$pattern" "$log_file" 2>/dev/null || true)
      [ -n "$out" ] && size=", $(du -h "$out" 2>/dev/null | cut -f1) written"
      log "$what: ${done_tables:-0} of ~$total tables$size, $((SECONDS - started)) s"
      next=$((SECONDS + 5))
    fi
  done
}

dump() {
  local port=$1 db=$2 file="$2@$1.dump"
  local out="$work/$file" err="$work/$2@$1.log" started=$SECONDS
  local info owner tables ts_version license server_version
  info=$(pg_sql "$port" "$db" -At -F $'\t' <<'SQL'
SELECT pg_get_userbyid(d.datdba),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname !~ '^pg_toast'),
       coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), '-'),
       coalesce(nullif(current_setting('timescaledb.license', true), ''), '-'),
       current_setting('server_version_num')
  FROM pg_database d WHERE d.datname = current_database()
SQL
  )
  # No field is empty ('-' instead): read would merge two tabs into one separator.
  IFS=$'\t' read -r owner tables ts_version license server_version <<<"$info"
  local what="port $port, $(cluster_name "$port")"
  [ "$ts_version" = - ] || what+=", TimescaleDB $ts_version"
  log "pg_dump $db ($what): $tables tables"
  # As the cluster superuser over the local socket; the file is written by this shell.
  as_service_user "$PG_BIN/pg_dump" -h "$RUN_DIR" -p "$port" -U postgres -Fc -v -d "$db" >"$out" 2>"$err" &
  local pid=$!
  show_progress "$pid" "pg_dump $db" "$err" "dumping contents of table" "$tables" "$out"
  wait "$pid" || { grep -v '^pg_dump: ' "$err" >&2 || true; tail -n 20 "$err" >&2; die "pg_dump of $db (port $port) failed"; }
  # TimescaleDB's catalog always draws warnings about circular foreign keys (harmless
  # for a full dump); any other warning or error is shown.
  grep -E '^pg_dump: (warning|error)' "$err" | grep -v 'circular foreign-key' >&2 || true
  [ -s "$out" ] || die "pg_dump of $db produced nothing"
  printf 'database\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$port" "$db" "$owner" "$file" "$(stat -c %s "$out")" \
    "$ts_version" "$license" "$server_version" >>"$manifest"
  # Database-level grants (CONNECT, ...) are not part of a dump without --create:
  # kept here so that restore.sh --create can give them back.
  local grants grantee privilege
  grants=$(pg_sql "$port" postgres -At -F $'\t' -v db="$db" <<'SQL'
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
  FROM pg_database d, aclexplode(d.datacl) a
 WHERE d.datname = :'db' AND a.grantee <> d.datdba
 ORDER BY 1, 2
SQL
  )
  while IFS=$'\t' read -r grantee privilege; do
    [ -n "$grantee" ] && printf 'grant\t%s\t%s\t%s\t%s\n' "$port" "$db" "$grantee" "$privilege" >>"$manifest"
  done <<<"$grants"
  log "$db: $(du -h "$out" | cut -f1) in $((SECONDS - started)) s"
}

started=$SECONDS
for target in "${targets[@]}"; do dump "${target%%/*}" "${target#*/}"; done
rm -f "$work"/*.log # pg_dump's messages: shown above when they mattered
(cd "$work" && sha256sum -- MANIFEST ./*.dump >SHA256SUMS)
chmod 600 "$work"/*
mv "$work" "$dest"
trap - EXIT
size=$(du -sh "$dest" | cut -f1)
log "backup written to $dest ($size, ${#targets[@]} databases, $((SECONDS - started)) s)"

# Record a backup_done system event in each backed-up database that has the
# system_events table (table only: the shell has no Kafka client).
if [ "$record_event" -eq 1 ]; then
  for target in "${targets[@]}"; do
    port=${target%%/*} db=${target#*/}
    has=$(pg_sql "$port" "$db" -At -c "SELECT to_regclass('public.system_events') IS NOT NULL")
    [ "$has" = t ] || continue
    pg_sql "$port" "$db" -v dest="$dest" -v size="$size" -v host="$(hostname)" <<'SQL' ||
INSERT INTO system_events (time, event_id, component, event_type, severity, message, host, details)
VALUES (now(), gen_random_uuid(), 'ops.backup', 'backup_done', 'info', 'backup written to ' || :'dest', :'host',
        jsonb_build_object('path', :'dest', 'size', :'size'));
SQL
      log "could not record the backup_done event in $db (port $port)"
  done
fi

# Retention: the newest $keep complete backups stay (a folder counts when it has a MANIFEST).
if [ "$keep" -gt 0 ]; then
  mapfile -t backups < <(find "$dest_root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
    -regex '.*/[0-9]{8}T[0-9]{6}Z(-[0-9]+)?' -exec test -f '{}/MANIFEST' ';' -print | sort -V)
  excess=$((${#backups[@]} - keep))
  for ((i = 0; i < excess; i++)); do
    log "retention ($keep kept): removing ${backups[i]}"
    rm -rf -- "${backups[i]}"
  done
fi
echo "$dest"
