#!/usr/bin/env bash
# TimescaleDB community edition (timescaledb.license = 'timescale') for nexanest:
# a second PostgreSQL cluster on 127.0.0.1:5434 (data in $STATE_DIR/timescaledb-community,
# log in $LOG_DIR/timescaledb-community.log), beside the Apache cluster of timescaledb.sh.
#
#   timescaledb-community.sh install   build the community edition into its own prefix (slow once, then cached)
#   timescaledb-community.sh start     init + start the cluster, ensure roles, database and extension
#   timescaledb-community.sh stop
#   timescaledb-community.sh status    one line; exits non-zero when down
#   timescaledb-community.sh logs [-f]
#   timescaledb-community.sh edition   prints the license of the loaded build (timescale)
#
# Debian packages only the Apache edition of TimescaleDB, and timescaledb.sh installs
# it (2.19.3) into /usr/lib/postgresql/$PG_VERSION. The community edition is the same
# version built from the upstream source with its tsl/ module, so it cannot go there
# too: `install` copies PostgreSQL's tree (bin, lib, share) into a prefix of its own
# under $CACHE_DIR, mirroring the /usr layout so that the copied binaries find their
# share and lib directories relative to themselves (PostgreSQL is relocatable), and
# `make install DESTDIR=` puts the community build into that copy only.
#
# The source is NEXANEST_TIMESCALEDB_COMMUNITY_SOURCE: a path to, or an http(s) URL
# of, the release tarball (default: the upstream release on GitHub). When
# NEXANEST_TIMESCALEDB_COMMUNITY_SHA256 is set the tarball must have that digest; in
# any case its version.config must name $COMMUNITY_VERSION and it must hold tsl/.
SERVICE_NAME=timescaledb-community
. "$(dirname "$0")/lib.sh"

PORT=5434
DATA_DIR="$STATE_DIR/timescaledb-community"
LOG_FILE="$LOG_DIR/timescaledb-community.log"

COMMUNITY_VERSION=2.19.3
SOURCE="${NEXANEST_TIMESCALEDB_COMMUNITY_SOURCE:-https://github.com/timescale/timescaledb/archive/refs/tags/$COMMUNITY_VERSION.tar.gz}"
SOURCE_SHA256="${NEXANEST_TIMESCALEDB_COMMUNITY_SHA256:-}"

WORK_DIR="$CACHE_DIR/timescaledb-community"
TARBALL="$WORK_DIR/timescaledb-$COMMUNITY_VERSION.tar.gz"
SRC_DIR="$WORK_DIR/timescaledb-$COMMUNITY_VERSION"
BUILD_DIR="$WORK_DIR/build-pg$PG_VERSION"
BUILD_LOG="$WORK_DIR/build-pg$PG_VERSION.log"
# The relocatable copy of PostgreSQL: $ROOT/usr/lib/postgresql/N/{bin,lib}, $ROOT/usr/share/postgresql/N.
ROOT="$WORK_DIR/pg$PG_VERSION"
ROOT_STAMP="$ROOT/.nexanest-installed"
SYSTEM_PG_BIN=$PG_BIN
# Every pg_* helper of lib.sh runs the binaries of the copy from here on.
PG_BIN="$ROOT/usr/lib/postgresql/$PG_VERSION/bin"

usage() {
  echo "usage: $0 install | start | stop | status | logs [-f] | edition" >&2
  exit 2
}

# --- install ------------------------------------------------------------------

# What the installed copy was made from; a change of source, server or script rebuilds.
wanted_stamp() {
  printf 'version=%s\npg_config=%s\nlayout=1\n' "$COMMUNITY_VERSION" "$("$SYSTEM_PG_BIN/pg_config" --version)"
}

installed() {
  [ -f "$ROOT_STAMP" ] && [ "$(sed -n '1,3p' "$ROOT_STAMP")" = "$(wanted_stamp)" ] &&
    [ -x "$PG_BIN/postgres" ] &&
    [ -f "$ROOT/usr/lib/postgresql/$PG_VERSION/lib/timescaledb-tsl-$COMMUNITY_VERSION.so" ]
}

# Print the path of the unpacked source tree (fetched and checked once, then cached).
fetch_source() {
  if [ -f "$SRC_DIR/.nexanest-unpacked" ] && [ "$(cat "$SRC_DIR/.nexanest-unpacked")" = "$SOURCE" ]; then
    log "using cached source $SRC_DIR"
    printf '%s' "$SRC_DIR"
    return 0
  fi
  rm -f "$TARBALL"
  case "$SOURCE" in
    http://* | https://*)
      apt_install curl ca-certificates
      log "downloading $SOURCE"
      curl -fsSL --retry 3 -o "$TARBALL.part" "$SOURCE" || die "could not download $SOURCE"
      mv "$TARBALL.part" "$TARBALL"
      ;;
    *)
      [ -f "$SOURCE" ] || die "NEXANEST_TIMESCALEDB_COMMUNITY_SOURCE=$SOURCE: no such file"
      log "using the source tarball $SOURCE"
      cp "$SOURCE" "$TARBALL"
      chmod u+w "$TARBALL"
      ;;
  esac
  if [ -n "$SOURCE_SHA256" ]; then
    echo "$SOURCE_SHA256  $TARBALL" | sha256sum -c --status ||
      die "$SOURCE does not have the sha256 $SOURCE_SHA256 (NEXANEST_TIMESCALEDB_COMMUNITY_SHA256)"
    log "sha256 checked"
  fi
  rm -rf "$SRC_DIR" "$WORK_DIR/unpack"
  mkdir -p "$WORK_DIR/unpack"
  tar -xf "$TARBALL" -C "$WORK_DIR/unpack" || die "could not unpack $SOURCE"
  local top
  top=$(find "$WORK_DIR/unpack" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  [ -f "$top/CMakeLists.txt" ] || die "unexpected source layout in $SOURCE: no CMakeLists.txt"
  grep -qxF "version = $COMMUNITY_VERSION" "$top/version.config" ||
    die "$SOURCE is not TimescaleDB $COMMUNITY_VERSION (see its version.config)"
  [ -d "$top/tsl/src" ] || die "$SOURCE has no tsl/ module: it is an Apache-only source (Debian's +dfsg?)"
  mv "$top" "$SRC_DIR"
  rm -rf "$WORK_DIR/unpack" "$TARBALL"
  echo "$SOURCE" >"$SRC_DIR/.nexanest-unpacked"
  printf '%s' "$SRC_DIR"
}

# A copy of the system's PostgreSQL $PG_VERSION under $ROOT, without Debian's
# (Apache) TimescaleDB files, so only the community build is found there.
copy_postgres() {
  log "copying PostgreSQL $PG_VERSION into $ROOT"
  rm -rf "$ROOT"
  mkdir -p "$ROOT/usr/lib/postgresql" "$ROOT/usr/share/postgresql"
  cp -a "/usr/lib/postgresql/$PG_VERSION" "$ROOT/usr/lib/postgresql/"
  cp -a "$("$SYSTEM_PG_BIN/pg_config" --sharedir)" "$ROOT/usr/share/postgresql/"
  rm -f "$ROOT/usr/lib/postgresql/$PG_VERSION/lib"/timescaledb*.so \
    "$ROOT/usr/share/postgresql/$PG_VERSION/extension"/timescaledb*
  local share
  share=$("$PG_BIN/pg_config" --sharedir)
  [ "$share" = "$ROOT/usr/share/postgresql/$PG_VERSION" ] ||
    die "the copy of PostgreSQL does not relocate (its pg_config --sharedir is $share)"
}

build() {
  local srcdir started
  apt_install cmake make gcc libc6-dev libssl-dev
  # Same headers as the Apache build (timescaledb.sh install brings them).
  "$LOCAL_DIR/timescaledb.sh" install >&2
  mkdir -p "$WORK_DIR"
  srcdir=$(fetch_source)
  : >"$BUILD_LOG"
  started=$(date +%s)
  if [ -f "$BUILD_DIR/CMakeCache.txt" ] &&
    ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$srcdir" "$BUILD_DIR/CMakeCache.txt"; then
    rm -rf "$BUILD_DIR"
  fi
  # Against the system's pg_config (headers, install paths under /usr); DESTDIR then
  # redirects the install into the copy. Not APACHE_ONLY: the tsl/ module is the point.
  log "configuring the community edition (cmake, log: $BUILD_LOG)"
  cmake -S "$srcdir" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DPG_CONFIG="$SYSTEM_PG_BIN/pg_config" \
    -DREGRESS_CHECKS=OFF \
    -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF \
    -DSEND_TELEMETRY_DEFAULT=OFF \
    >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "cmake failed"; }
  log "compiling with $(nproc) jobs (a few minutes)"
  make -C "$BUILD_DIR" -j"$(nproc)" >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make failed"; }
  copy_postgres
  log "make install DESTDIR=$ROOT"
  make -C "$BUILD_DIR" install DESTDIR="$ROOT" >>"$BUILD_LOG" 2>&1 ||
    { tail -n 30 "$BUILD_LOG" >&2; die "make install failed"; }
  { wanted_stamp; printf 'source=%s\nbuilt=%s\n' "$SOURCE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"; } >"$ROOT_STAMP"
  log "built and installed in $(($(date +%s) - started))s"
}

cmd_install() {
  pg_install_server
  ensure_dirs
  if installed; then
    log "TimescaleDB $COMMUNITY_VERSION (community) is installed in $ROOT"
    return 0
  fi
  is_root || die "installing the community edition needs root (apt-get)"
  build
  installed || die "the community build is incomplete under $ROOT (see $BUILD_LOG)"
}

# --- cluster ------------------------------------------------------------------

running() {
  [ -f "$DATA_DIR/PG_VERSION" ] && as_service_user "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

cmd_start() {
  installed || die "the community edition is not installed: run $0 install first"
  local ts_pw ingest_pw
  ts_pw=$(env_value NEXANEST_TIMESCALE_PASSWORD)
  ingest_pw=$(env_value NEXANEST_INGEST_PASSWORD)
  ensure_dirs
  # As the Apache cluster, with the community license and a smaller memory share:
  # this second cluster serves the edition's tests beside the first.
  pg_cluster_init "$DATA_DIR" "$PORT" \
    "shared_preload_libraries = 'timescaledb'" \
    "timescaledb.license = 'timescale'" \
    "timescaledb.telemetry_level = off" \
    "timescaledb.max_background_workers = 8" \
    "max_worker_processes = 20" \
    "max_parallel_workers = 8"
  pg_cluster_start "$DATA_DIR" "$PORT" timescaledb-community
  pg_ensure_role "$PORT" timescale "$ts_pw"
  # The test session recreates its own database (timescale_test) here on every run,
  # as the owner role: it never touches the database `timescale` of this cluster.
  pg_sql "$PORT" postgres -c 'ALTER ROLE timescale CREATEDB'
  pg_ensure_role "$PORT" nexanest_ingest "$ingest_pw"
  pg_ensure_role "$PORT" nexanest_portfolio "$(env_value NEXANEST_PORTFOLIO_SERVICE_PASSWORD)"
  pg_ensure_role "$PORT" nexanest_market_data "$(env_value NEXANEST_MARKET_DATA_SERVICE_PASSWORD)"
  pg_ensure_role "$PORT" nexanest_analytics "$(env_value NEXANEST_ANALYTICS_SERVICE_PASSWORD)"
  pg_ensure_database "$PORT" timescale timescale
  local role
  for role in nexanest_ingest nexanest_portfolio nexanest_market_data nexanest_analytics; do pg_grant_connect "$PORT" timescale "$role"; done
  pg_sql "$PORT" timescale -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION IF NOT EXISTS timescaledb'
  pg_ensure_monitor_role "$PORT"
  log "ready on 127.0.0.1:$PORT, database timescale, timescaledb $(ext_version) edition $(license)"
  # A running Prometheus gains this cluster's exporter (9189, job timescaledb-community).
  if port_open 9090; then "$LOCAL_DIR/prometheus.sh" start; fi
}

ext_version() {
  pg_sql "$PORT" timescale -At -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'" 2>/dev/null || true
}

license() {
  pg_sql "$PORT" timescale -At -c 'SHOW timescaledb.license' 2>/dev/null || true
}

cmd_status() {
  local extra=""
  if running; then
    local v l
    v=$(ext_version)
    l=$(license)
    extra="timescaledb ${v:-not-created} edition ${l:-unknown}"
  fi
  pg_status_line "$DATA_DIR" "$PORT" ts-community "$extra"
}

cmd_edition() {
  running || die "not running: start it first ($0 start)"
  local l
  l=$(license)
  [ -n "$l" ] || die "could not read timescaledb.license in database timescale (run $0 start)"
  echo "$l"
}

cmd_logs() {
  [ -f "$LOG_FILE" ] || die "no log yet ($LOG_FILE)"
  case "${1:-}" in
    -f) exec tail -n 50 -F "$LOG_FILE" ;;
    "") tail -n 100 "$LOG_FILE" ;;
    *) usage ;;
  esac
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) pg_cluster_stop "$DATA_DIR" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  edition) cmd_edition ;;
  *) usage ;;
esac
