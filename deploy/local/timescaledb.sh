#!/usr/bin/env bash
# TimescaleDB for nexanest: a PostgreSQL cluster with the timescaledb extension
# on 127.0.0.1:5433 (data in $STATE_DIR/timescaledb, log in $LOG_DIR/timescaledb.log).
#
#   timescaledb.sh install   make the extension available for PostgreSQL $PG_VERSION (slow once, then cached)
#   timescaledb.sh start     init + start the cluster, ensure roles, databases (timescale and the
#                            tests' timescale_test) and extension
#   timescaledb.sh stop
#   timescaledb.sh status    one line; exits non-zero when down
#   timescaledb.sh logs [-f]
#   timescaledb.sh edition   prints the license of the loaded build (apache | timescale)
#
# Debian 12 ships no timescaledb binary package. `install` uses one if apt has it
# for the installed PostgreSQL major (postgresql-NN-timescaledb); otherwise it
# builds Debian's `timescaledb` source package from $TS_SUITE (trixie: 2.19.x,
# which supports PostgreSQL 14-17; sid has moved on to versions built for newer
# majors only). The Debian source is +dfsg, i.e. without the Timescale-licensed
# tsl/ code, so the build is Apache-only: `edition` reports `apache`, and features
# of the Timescale license (compression, continuous-aggregate policies, ...) are absent.
SERVICE_NAME=timescaledb
. "$(dirname "$0")/lib.sh"

PORT=5433
DATA_DIR="$STATE_DIR/timescaledb"
LOG_FILE="$LOG_DIR/timescaledb.log"

TS_SUITE="${NEXANEST_TIMESCALEDB_SUITE:-trixie}"
TS_SOURCES_LIST=/etc/apt/sources.list.d/nexanest-deb-src.sources
SRC_CACHE="$CACHE_DIR/timescaledb-src"
BUILD_DIR="$SRC_CACHE/build-pg$PG_VERSION"
BUILD_STAMP="$BUILD_DIR/.nexanest-built"
BUILD_LOG="$SRC_CACHE/build-pg$PG_VERSION.log"

export DEBIAN_FRONTEND=noninteractive

usage() {
  echo "usage: $0 install | start | stop | status | logs [-f] | edition" >&2
  exit 2
}

# --- installed extension ----------------------------------------------------

pg_dir() { # pg_dir sharedir|pkglibdir: from pg_config when present, else Debian's layout
  if [ -x "$PG_BIN/pg_config" ]; then
    "$PG_BIN/pg_config" "--$1"
  elif [ "$1" = sharedir ]; then
    echo "/usr/share/postgresql/$PG_VERSION"
  else
    echo "/usr/lib/postgresql/$PG_VERSION/lib"
  fi
}

# Version named by the installed control file (empty when not installed).
installed_version() {
  local control
  control="$(pg_dir sharedir)/extension/timescaledb.control"
  [ -f "$control" ] || return 0
  sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$control"
}

# The control file, its install script, the loader and the versioned module are all there.
extension_installed() {
  local v share lib
  v=$(installed_version)
  [ -n "$v" ] || return 1
  share="$(pg_dir sharedir)/extension"
  lib=$(pg_dir pkglibdir)
  [ -f "$share/timescaledb--$v.sql" ] && [ -f "$lib/timescaledb.so" ] && [ -f "$lib/timescaledb-$v.so" ]
}

# --- install ------------------------------------------------------------------

apt_update_once() {
  if [ "$_APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq
    _APT_UPDATED=1
  fi
}

# Headers matching the installed server when apt still offers that version,
# else the candidate (a newer minor of the same major is ABI compatible).
install_server_dev() {
  local pkg="postgresql-server-dev-$PG_VERSION" server_version
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then return 0; fi
  server_version=$(dpkg-query -W -f='${Version}' "postgresql-$PG_VERSION")
  if apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$server_version"; then
    apt_install "$pkg=$server_version"
  else
    apt_install "$pkg"
  fi
}

install_build_deps() {
  apt_install cmake make gcc libc6-dev libssl-dev
  install_server_dev
}

# A binary package for this PostgreSQL major, if any configured repository has one.
binary_package() {
  local pkg candidate
  for pkg in "postgresql-$PG_VERSION-timescaledb" "timescaledb-2-postgresql-$PG_VERSION"; do
    candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
      echo "$pkg"
      return 0
    fi
  done
}

ensure_deb_src() {
  local wanted
  wanted="# Written by nexanest deploy/local/timescaledb.sh: Debian source packages only,
# used to build the timescaledb extension for PostgreSQL $PG_VERSION. Safe to delete.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $TS_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  if [ ! -f "$TS_SOURCES_LIST" ] || [ "$(cat "$TS_SOURCES_LIST")" != "$wanted" ]; then
    log "adding deb-src for $TS_SUITE ($TS_SOURCES_LIST)"
    printf '%s\n' "$wanted" >"$TS_SOURCES_LIST"
    _APT_UPDATED=0
  fi
  apt_update_once
}

# Print the path of the unpacked (and patched) source tree.
fetch_source() {
  local version upstream srcdir
  version=$(apt-cache madison timescaledb |
    awk -F'|' -v suite=" $TS_SUITE/" 'index($3, suite) && $3 ~ /Sources/ {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$version" ] || die "no timescaledb source package in Debian $TS_SUITE"
  upstream=${version#*:}
  upstream=${upstream%-*}
  srcdir="$SRC_CACHE/timescaledb-$upstream"
  if [ -f "$srcdir/.nexanest-unpacked" ] && [ "$(cat "$srcdir/.nexanest-unpacked")" = "$version" ]; then
    log "using cached source timescaledb $version ($srcdir)"
  else
    log "apt-get source timescaledb $version ($TS_SUITE)"
    rm -rf "$srcdir"
    # Downloads as root: the _apt sandbox user cannot write into $SRC_CACHE.
    (cd "$SRC_CACHE" && apt-get source -qq -o APT::Sandbox::User=root "timescaledb=$version" >/dev/null) ||
      die "apt-get source timescaledb=$version failed"
    [ -f "$srcdir/CMakeLists.txt" ] || die "unexpected source layout: $srcdir/CMakeLists.txt is missing"
    echo "$version" >"$srcdir/.nexanest-unpacked"
  fi
  printf '%s' "$srcdir"
}

# Refuse early (with a useful message) when this source does not support our major.
check_pg_supported() {
  local srcdir=$1 min max
  min=$(grep -oE 'PG_VERSION_MAJOR\}? LESS "[0-9]+"' "$srcdir/CMakeLists.txt" | grep -oE '[0-9]+' | head -n 1 || true)
  max=$(grep -oE 'PG_VERSION_MAJOR\}? GREATER "[0-9]+"' "$srcdir/CMakeLists.txt" | grep -oE '[0-9]+' | head -n 1 || true)
  if [ -n "$min" ] && [ -n "$max" ]; then
    if [ "$PG_VERSION" -lt "$min" ] || [ "$PG_VERSION" -gt "$max" ]; then
      die "timescaledb in Debian $TS_SUITE supports PostgreSQL $min-$max, not $PG_VERSION (set NEXANEST_TIMESCALEDB_SUITE)"
    fi
    log "source supports PostgreSQL $min-$max"
  fi
}

build_from_source() {
  local srcdir started
  apt_install dpkg-dev xz-utils
  ensure_deb_src
  mkdir -p "$SRC_CACHE"
  srcdir=$(fetch_source)
  check_pg_supported "$srcdir"
  install_build_deps

  # A build tree configured for another source version is thrown away.
  if [ -f "$BUILD_DIR/CMakeCache.txt" ] &&
    ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$srcdir" "$BUILD_DIR/CMakeCache.txt"; then
    log "discarding build tree of another source version"
    rm -rf "$BUILD_DIR"
  fi
  rm -f "$BUILD_STAMP"
  : >"$BUILD_LOG"
  started=$(date +%s)
  # cmake directly rather than ./bootstrap: bootstrap asks on the terminal when the
  # build directory already exists. Same options as Debian's rules (Apache-only),
  # but keeping the telemetry GUC so `timescaledb.telemetry_level = off` is valid.
  log "configuring (cmake, log: $BUILD_LOG)"
  cmake -S "$srcdir" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DPG_CONFIG="$PG_BIN/pg_config" \
    -DAPACHE_ONLY=ON \
    -DREGRESS_CHECKS=OFF \
    -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF \
    -DSEND_TELEMETRY_DEFAULT=OFF \
    >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "cmake failed"; }
  log "compiling with $(nproc) jobs (a few minutes)"
  make -C "$BUILD_DIR" -j"$(nproc)" >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make failed"; }
  log "make install"
  make -C "$BUILD_DIR" install >>"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make install failed"; }
  printf 'source=%s\npg_config=%s\nbuilt=%s\n' "$(cat "$srcdir/.nexanest-unpacked")" \
    "$("$PG_BIN/pg_config" --version)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$BUILD_STAMP"
  log "built in $(($(date +%s) - started))s"
}

cmd_install() {
  pg_install_server # first: it creates the postgres user that ensure_dirs chowns to
  ensure_dirs
  if extension_installed; then
    log "TimescaleDB $(installed_version) is installed for PostgreSQL $PG_VERSION"
    return 0
  fi
  is_root || die "installing TimescaleDB needs root (apt-get and files under /usr)"

  # Files lost but the build tree is cached: only reinstall it.
  if [ -f "$BUILD_STAMP" ]; then
    log "reinstalling the cached build ($(sed -n 's/^source=//p' "$BUILD_STAMP"))"
    install_build_deps
    if make -C "$BUILD_DIR" install >>"$BUILD_LOG" 2>&1 && extension_installed; then
      log "TimescaleDB $(installed_version) is installed for PostgreSQL $PG_VERSION"
      return 0
    fi
    log "cached build did not install cleanly (see $BUILD_LOG); rebuilding"
  fi

  apt_update_once
  local pkg
  pkg=$(binary_package)
  if [ -n "$pkg" ]; then
    log "using the binary package $pkg"
    apt_install "$pkg"
  else
    log "no timescaledb binary package for PostgreSQL $PG_VERSION; building Debian's source package from $TS_SUITE"
    build_from_source
  fi
  extension_installed || die "TimescaleDB files are still missing under $(pg_dir sharedir)/extension and $(pg_dir pkglibdir)"
  log "TimescaleDB $(installed_version) is installed for PostgreSQL $PG_VERSION"
}

# --- cluster ------------------------------------------------------------------

running() {
  [ -f "$DATA_DIR/PG_VERSION" ] && as_service_user "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

cmd_start() {
  [ -x "$PG_BIN/postgres" ] || die "PostgreSQL $PG_VERSION is not installed: run $0 install"
  extension_installed ||
    die "the TimescaleDB extension is not installed for PostgreSQL $PG_VERSION: run $0 install first"
  env_value NEXANEST_TIMESCALE_PASSWORD >/dev/null # a missing .env fails before initdb
  ensure_dirs
  # Workers: 8 TimescaleDB (launcher + one scheduler per database + jobs come
  # out of these), 8 parallel query workers, and a few for PostgreSQL's own.
  pg_cluster_init "$DATA_DIR" "$PORT" \
    "shared_preload_libraries = 'timescaledb'" \
    "timescaledb.telemetry_level = off" \
    "timescaledb.max_background_workers = 8" \
    "max_worker_processes = 20" \
    "max_parallel_workers = 8"
  pg_cluster_start "$DATA_DIR" "$PORT" timescaledb
  ts_provision "$PORT"
  log "ready on 127.0.0.1:$PORT, database timescale, timescaledb $(ext_version)"
}

ext_version() {
  pg_sql "$PORT" timescale -At -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'" 2>/dev/null || true
}

# The preloaded library is only the loader; the versioned module that defines
# timescaledb.license is loaded in databases that have the extension.
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
  pg_status_line "$DATA_DIR" "$PORT" timescaledb "$extra"
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
