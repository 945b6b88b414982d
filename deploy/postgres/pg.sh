#!/usr/bin/env bash
# Throwaway PostgreSQL cluster with pgaudit, csvlog and jsonlog, for the real-PostgreSQL
# integration test and local experiments with `causelog ingest postgres-log`. See README.md
# next to this file.
#
#   pg.sh install | start | stop | status | env | reset
set -euo pipefail

CAUSELOG_HOME="${CAUSELOG_HOME:-$PWD/.causelog}"
[[ "$CAUSELOG_HOME" == /* ]] || CAUSELOG_HOME="$PWD/$CAUSELOG_HOME"
DATA="${CAUSELOG_HOME%/}/postgres"
LOG_DIR="$DATA/log"
PORT="${CAUSELOG_PG_PORT:-55432}"
# pgaudit logs every statement of these classes (all but MISC and MISC_SET: BEGIN, SET, ...).
PGAUDIT_LOG="${CAUSELOG_PG_AUDIT_LOG:-read,write,function,role,ddl}"
# pgaudit already logs the statements; `all` makes the server log each one a second time as
# `statement: ...` (useful to exercise that path of the parser; noisy otherwise).
LOG_STATEMENT="${CAUSELOG_PG_LOG_STATEMENT:-none}"

say() { printf 'pg.sh: %s\n' "$*"; }
die() { printf 'pg.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: $(basename "$0") {install|start|stop|status|env|reset}

  install   apt-get install postgresql and the matching postgresql-<major>-pgaudit (if missing)
  start     initdb (once) in \$CAUSELOG_HOME/postgres and start it on 127.0.0.1:\$CAUSELOG_PG_PORT
  stop      pg_ctl -m fast stop
  status    exit 0 if running, 3 if stopped
  env       print PGHOST, PGPORT, PGUSER, PGDATA, CAUSELOG_PG_LOG_DIR as shell assignments
  reset     stop and delete \$CAUSELOG_HOME/postgres

environment: CAUSELOG_HOME ($CAUSELOG_HOME), CAUSELOG_PG_PORT ($PORT),
  CAUSELOG_PG_BIN (directory of initdb/pg_ctl; default: newest /usr/lib/postgresql/*/bin),
  CAUSELOG_PG_AUDIT_LOG ($PGAUDIT_LOG), CAUSELOG_PG_LOG_STATEMENT ($LOG_STATEMENT)
EOF
}

# Newest installed server major version (the server's, not libpq's pg_config), or nothing.
server_major() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$d" ] || continue
        d="${d#/usr/lib/postgresql/}"
        d="${d%%/*}"
        if [ -z "$best" ] || [ "$d" -gt "$best" ]; then best="$d"; fi
    done
    if [ -z "$best" ] && command -v pg_config >/dev/null 2>&1; then
        best="$(pg_config --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')"
    fi
    printf '%s' "$best"
}

pg_bin() {
    if [ -n "${CAUSELOG_PG_BIN:-}" ]; then printf '%s' "$CAUSELOG_PG_BIN"; return; fi
    local major
    major="$(server_major)"
    [ -n "$major" ] && [ -x "/usr/lib/postgresql/$major/bin/initdb" ] \
        || die "no PostgreSQL server found (run: $0 install, or set CAUSELOG_PG_BIN)"
    printf '%s' "/usr/lib/postgresql/$major/bin"
}

# Run a command as the cluster's owner: the `postgres` OS user when we are root (the server
# refuses to run as root), else ourselves.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_install() {
    local need=() major
    if [ -z "$(server_major)" ] || [ ! -d /usr/lib/postgresql ]; then need+=(postgresql); fi
    major="$(server_major)"
    if [ -n "$major" ]; then
        [ -f "/usr/lib/postgresql/$major/lib/pgaudit.so" ] || need+=("postgresql-$major-pgaudit")
    fi
    if [ ${#need[@]} -eq 0 ]; then
        say "postgresql $major and pgaudit already installed"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${need[*]} by hand"
    [ "$(id -u)" -eq 0 ] || die "installing ${need[*]} needs root (apt-get)"
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    major="$(server_major)"
    [ -n "$major" ] || die "postgresql installed but no server found under /usr/lib/postgresql"
    if [ ! -f "/usr/lib/postgresql/$major/lib/pgaudit.so" ]; then
        say "installing postgresql-$major-pgaudit"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$major-pgaudit" >/dev/null
    fi
    [ -f "/usr/lib/postgresql/$major/lib/pgaudit.so" ] || die "pgaudit.so missing for PostgreSQL $major"
    say "postgresql $major with pgaudit installed"
}

running() {
    [ -f "$DATA/PG_VERSION" ] || return 1
    as_owner "$(pg_bin)/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

write_config() {
    # Rewritten on every start (port and classes may change); postgresql.conf includes it.
    local conf
    conf="$(cat <<EOF
# written by deploy/postgres/pg.sh start; edits are overwritten
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
shared_preload_libraries = 'pgaudit'
pgaudit.log = '$PGAUDIT_LOG'
pgaudit.log_client = off
pgaudit.log_relation = off
pgaudit.log_parameter = off
logging_collector = on
log_destination = 'csvlog,jsonlog'
log_directory = '$LOG_DIR'
log_filename = 'postgresql-%Y%m%d-%H%M%S.log'
log_rotation_age = 0
log_rotation_size = 0
log_file_mode = 0640
log_connections = on
log_disconnections = on
log_statement = '$LOG_STATEMENT'
log_timezone = 'UTC'
timezone = 'UTC'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
)"
    as_owner tee "$DATA/causelog.conf" >/dev/null <<<"$conf"
}

cmd_start() {
    local bin
    bin="$(pg_bin)"
    [ -x "$bin/initdb" ] || die "$bin/initdb not found (run: $0 install)"
    [ -f "$bin/../lib/pgaudit.so" ] || die "pgaudit is not installed for $(basename "$(dirname "$bin")") (run: $0 install)"
    if running; then
        say "already running: port $(sed -n 4p "$DATA/postmaster.pid"), logs in $LOG_DIR"
        return
    fi
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "OS user postgres missing (run: $0 install)"
        mkdir -p "$DATA"
        chown postgres:postgres "$DATA"
        runuser -u postgres -- test -w "$DATA" \
            || die "user postgres cannot write $DATA: a parent directory is not traversable; use a CAUSELOG_HOME under /tmp (chmod 755)"
    else
        mkdir -p "$DATA"
    fi
    chmod 700 "$DATA"
    if [ ! -f "$DATA/PG_VERSION" ]; then
        [ -z "$(ls -A "$DATA")" ] || die "$DATA is not empty and holds no cluster"
        say "initdb $DATA"
        as_owner "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$CAUSELOG_HOME/initdb.log" 2>&1 \
            || die "initdb failed, see $CAUSELOG_HOME/initdb.log"
        # Loopback only and trusted: the cluster is a throwaway for tests.
        as_owner tee "$DATA/pg_hba.conf" >/dev/null <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
        printf "\ninclude 'causelog.conf'\n" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
    fi
    as_owner mkdir -p "$LOG_DIR"
    write_config
    if command -v ss >/dev/null 2>&1 && ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; then
        die "port $PORT is in use (set CAUSELOG_PG_PORT)"
    fi
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$DATA/startup.log" -w -t 60 start >/dev/null \
        || die "pg_ctl start failed:$(printf '\n'; tail -n 20 "$DATA/startup.log" 2>/dev/null; tail -n 20 "$LOG_DIR"/*.log 2>/dev/null)"
    say "started PostgreSQL $(cat "$DATA/PG_VERSION") with pgaudit on 127.0.0.1:$PORT"
    say "logs (csvlog + jsonlog) in $LOG_DIR"
}

cmd_stop() {
    if ! running; then
        say "not running"
        return
    fi
    as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped"
}

cmd_status() {
    if running; then
        say "running: port $(sed -n 4p "$DATA/postmaster.pid"), logs in $LOG_DIR"
    else
        say "stopped"
        exit 3
    fi
}

cmd_env() {
    local port="$PORT"
    if running; then port="$(sed -n 4p "$DATA/postmaster.pid")"; fi
    printf 'PGHOST=127.0.0.1\nPGPORT=%s\nPGUSER=postgres\nPGDATA=%s\nCAUSELOG_PG_LOG_DIR=%s\n' \
        "$port" "$DATA" "$LOG_DIR"
}

cmd_reset() {
    cmd_stop
    case "$DATA" in
        /|"") die "refusing to delete '$DATA'" ;;
    esac
    rm -rf -- "$DATA"
    rm -f -- "$CAUSELOG_HOME/initdb.log"
    say "deleted $DATA"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    reset) cmd_reset ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
