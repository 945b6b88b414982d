#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) for local
# development and integration tests. Jars come from Maven Central via pom.xml,
# so no Kafka tarball or Docker is needed. See README.md next to this file.
#
#   kafka.sh fetch | start | wait [TIMEOUT] | stop | status | reset
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LIBS_DIR="$SCRIPT_DIR/libs"
TARGET_DIR="$SCRIPT_DIR/target"
POM="$SCRIPT_DIR/pom.xml"
LOG4J_CONFIG="$SCRIPT_DIR/log4j2.properties"
# Records which pom.xml the jars in libs/ were resolved from; a missing or
# stale marker means libs/ is incomplete (e.g. an interrupted download).
FETCH_MARKER="$LIBS_DIR/.fetched"

CAUSELOG_HOME="${CAUSELOG_HOME:-$PWD/.causelog}"
# The path ends up in the broker's command line, which is how stop/status
# recognise it, so it must not depend on the caller's working directory.
[[ "$CAUSELOG_HOME" == /* ]] || CAUSELOG_HOME="$PWD/$CAUSELOG_HOME"
# Canonical spelling (no "//", no trailing "/") so the same home always
# yields the same string, and "/" is recognisable for the reset guard.
CAUSELOG_HOME="$(sed -e 's#//*#/#g' -e 's#\(.\)/$#\1#' <<<"$CAUSELOG_HOME")"
DATA_DIR="${CAUSELOG_HOME%/}/kafka"
PORT="${CAUSELOG_KAFKA_PORT:-9092}"
CPORT="${CAUSELOG_KAFKA_CONTROLLER_PORT:-9093}"
HEAP_OPTS="${CAUSELOG_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
LOG_LEVEL="${CAUSELOG_KAFKA_LOG_LEVEL:-WARN}"
LOG_OPTS=("-Dlog4j2.configurationFile=$LOG4J_CONFIG" "-Dcauselog.kafka.logLevel=$LOG_LEVEL")

PROPS="$DATA_DIR/server.properties"
PID_FILE="$DATA_DIR/kafka.pid"
BROKER_LOG="$DATA_DIR/broker.log"
LOG_DIRS="$DATA_DIR/data"
NODE_ID=1
# 4 MiB: big enough for any legitimate event, small enough that tests can
# produce an "oversized" record and see the application reject it.
MAX_MESSAGE_BYTES=$((4 * 1024 * 1024))

say() { printf 'kafka.sh: %s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: $(basename "$0") {fetch|start|wait [TIMEOUT]|stop|status|reset}

  fetch          download the Kafka jars into deploy/kafka/libs (once)
  start          start a single-node KRaft broker on 127.0.0.1:\$CAUSELOG_KAFKA_PORT
  wait [SECS]    wait until the broker answers metadata requests (default 60)
  stop           stop the broker (SIGTERM, SIGKILL after 30 s)
  status         exit 0 if running, 3 if stopped
  reset          stop and delete \$CAUSELOG_HOME/kafka

environment: CAUSELOG_HOME ($CAUSELOG_HOME), CAUSELOG_KAFKA_PORT ($PORT),
  CAUSELOG_KAFKA_CONTROLLER_PORT ($CPORT), KAFKA_BOOTSTRAP, JAVA, JAVA_HOME,
  MVN, PYTHON, CAUSELOG_KAFKA_HEAP_OPTS, CAUSELOG_KAFKA_JAVA_OPTS,
  CAUSELOG_KAFKA_LOG_LEVEL
EOF
}

validate_ports() {
    local p
    for p in "$PORT" "$CPORT"; do
        [[ "$p" =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || die "invalid port: '$p'"
    done
    [[ "$PORT" != "$CPORT" ]] || die "CAUSELOG_KAFKA_PORT and CAUSELOG_KAFKA_CONTROLLER_PORT must differ (both $PORT)"
}

# Serialises start/stop/reset (fd 9) and fetch (fd 8) so that parallel test
# sessions sharing a checkout or CAUSELOG_HOME don't download into the same
# dir or launch two brokers on one data dir. flock is Linux-only; elsewhere we
# simply run unlocked. The broker must not inherit these fds (see cmd_start).
take_lock() {
    local fd="$1" file="$2"
    command -v flock >/dev/null 2>&1 || return 0
    mkdir -p "$(dirname "$file")"
    eval "exec $fd>\"\$file\""
    flock -w 180 "$fd" || die "timed out waiting for lock $file (another kafka.sh still running?)"
}

# ---------------------------------------------------------------- java / mvn

find_java() {
    local want java
    if [[ -n "${JAVA:-}" ]]; then
        want="$JAVA"
    elif [[ -n "${JAVA_HOME:-}" ]]; then
        want="$JAVA_HOME/bin/java"
    else
        want=java
    fi
    java="$(command -v "$want" 2>/dev/null || true)"
    [[ -n "$java" ]] || die "java not found (tried '$want'): install a JDK 17+ or set JAVA / JAVA_HOME"
    # Kafka 4.x brokers refuse to run on anything older than 17, and the
    # failure otherwise shows up only as an UnsupportedClassVersionError
    # buried in the broker log.
    local version major
    version="$("$java" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
    major="${version%%.*}"
    [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$version")"
    [[ "$major" =~ ^[0-9]+$ ]] || die "cannot tell the version of $java ('$version')"
    ((major >= 17)) || die "$java is Java $version; Kafka 4 needs a JDK 17+ (set JAVA or JAVA_HOME)"
    JAVA_BIN="$java"
}

pom_checksum() { cksum <"$POM" | awk '{print $1 "-" $2}'; }

libs_complete() {
    [[ -f "$FETCH_MARKER" && "$(cat "$FETCH_MARKER")" == "$(pom_checksum)" ]]
}

cmd_fetch() {
    libs_complete && { say "jars already in $LIBS_DIR"; return 0; }
    take_lock 8 "$TARGET_DIR/fetch.lock"
    # Another process may have finished the download while we waited.
    libs_complete && { say "jars already in $LIBS_DIR"; return 0; }

    local mvn="${MVN:-mvn}"
    command -v "$mvn" >/dev/null 2>&1 || die "mvn not found: install Maven 3.6+ (or set MVN) to download the Kafka jars"

    say "downloading Kafka jars from Maven Central into $LIBS_DIR ..."
    # Download into a scratch dir and swap it in, so an interrupted fetch never
    # leaves a half-populated libs/ that looks usable.
    local tmp="$TARGET_DIR/libs.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # Output goes to a file: even with -B -q, Maven 3.8 emits stray ANSI reset
    # codes, and on success there is nothing worth showing.
    local mvn_log="$TARGET_DIR/fetch.log"
    if ! "$mvn" -B -q -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
        rm -rf "$tmp"
        sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | tail -n 40 >&2
        die "mvn failed to download the Kafka jars (is Maven Central reachable? proxy settings in ~/.m2/settings.xml?); full output in $mvn_log"
    fi
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "mvn succeeded but $tmp has no kafka_2.13 jar"
    pom_checksum >"$tmp/.fetched"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    say "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars"
}

# ------------------------------------------------------------------ process

read_pid() { [[ -f "$PID_FILE" ]] && tr -dc 0-9 <"$PID_FILE" || true; }

# A bare `kill -0` would also match an unrelated process that reused the pid
# after a reboot or crash, so also check it is a Kafka JVM started with our
# exact server.properties (the last argument on its command line).
pid_is_ours() {
    local pid="$1" cmdline
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        cmdline="$(ps -p "$pid" -o args= 2>/dev/null || true) "
    fi
    [[ "$cmdline" == *" kafka.Kafka $PROPS " ]]
}

running_pid() {
    local pid
    pid="$(read_pid)"
    if pid_is_ours "$pid"; then
        echo "$pid"
        return 0
    fi
    # The pid file can vanish while the broker lives on (someone cleaned
    # $CAUSELOG_HOME by hand); find it by its exact command line so stop and
    # status still work instead of reporting a mysteriously busy port.
    local f
    [[ -d /proc ]] || return 0
    for f in $(grep -lzxF -- "$PROPS" /proc/[0-9]*/cmdline 2>/dev/null || true); do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        if pid_is_ours "$pid"; then
            echo "$pid"
            return 0
        fi
    done
    return 0
}

port_open() {
    local host="$1" port="$2"
    # /dev/tcp keeps us free of nc/ss; timeout guards against a silently
    # dropped SYN on non-local hosts.
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

show_log_tail() {
    if [[ -s "$BROKER_LOG" ]]; then
        printf -- '--- last 40 lines of %s ---\n' "$BROKER_LOG" >&2
        tail -n 40 "$BROKER_LOG" >&2
        printf -- '--- end of log ---\n' >&2
    else
        printf 'kafka.sh: (no broker log at %s)\n' "$BROKER_LOG" >&2
    fi
}

# -------------------------------------------------------------------- start

write_properties() {
    mkdir -p "$DATA_DIR"
    # Rewritten on every start so port changes take effect; storage does not
    # depend on the ports because we use a static controller.quorum.voters
    # (the dynamic-quorum alternative records the controller endpoint in the
    # metadata log at format time).
    cat >"$PROPS.tmp" <<EOF
# Generated by deploy/kafka/kafka.sh on every start; edits will be lost.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$NODE_ID@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$LOG_DIRS

# One broker: every internal topic must fit on it.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# The default 50 partitions per internal topic buys nothing on one broker and
# makes the first consumer group / transactional producer noticeably slower.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# Topics are created explicitly by the application; a typo must fail loudly.
auto.create.topics.enable=false
num.partitions=1
# Tests start consumers and expect assignments immediately.
group.initial.rebalance.delay.ms=0

message.max.bytes=$MAX_MESSAGE_BYTES
replica.fetch.max.bytes=$MAX_MESSAGE_BYTES
EOF
    mv "$PROPS.tmp" "$PROPS"
}

random_cluster_id() {
    # Kafka cluster ids are 16 random bytes in unpadded URL-safe base64. Avoid
    # a leading '-' which the formatter's argument parser takes for an option.
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$id" != -* ]] && break
    done
    echo "$id"
}

format_storage_if_needed() {
    # meta.properties is what the broker itself checks; its presence means a
    # previous format (or run) owns this directory and its cluster id.
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    local cluster_id
    cluster_id="$(random_cluster_id)"
    say "formatting $LOG_DIRS (cluster id $cluster_id)"
    # --ignore-formatted turns a race with another formatter into a no-op.
    if ! "$JAVA_BIN" -Xmx256m "${LOG_OPTS[@]}" -cp "$LIBS_DIR/*" kafka.tools.StorageTool \
        format --ignore-formatted -t "$cluster_id" -c "$PROPS" >>"$BROKER_LOG" 2>&1; then
        show_log_tail
        die "formatting the Kafka storage in $LOG_DIRS failed"
    fi
}

cmd_start() {
    if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
        say "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP is set: using the existing cluster, not starting a local broker"
        return 0
    fi
    validate_ports
    take_lock 9 "$DATA_DIR/.lock"

    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        if port_open 127.0.0.1 "$PORT"; then
            say "already running (pid $pid, 127.0.0.1:$PORT)"
            return 0
        fi
        # Alive but not listening yet: a previous start is still booting.
        say "broker pid $pid is starting; waiting for it"
        cmd_wait 60
        return 0
    fi
    rm -f "$PID_FILE"

    local p
    for p in "$PORT" "$CPORT"; do
        if port_open 127.0.0.1 "$p"; then
            die "port $p on 127.0.0.1 is already in use by another process (another broker? set CAUSELOG_KAFKA_PORT / CAUSELOG_KAFKA_CONTROLLER_PORT, or KAFKA_BOOTSTRAP to reuse it)"
        fi
    done

    libs_complete || cmd_fetch
    find_java
    write_properties

    # Keep the single log from growing without bound across many runs.
    if [[ -f "$BROKER_LOG" ]] && (($(wc -c <"$BROKER_LOG") > 20 * 1024 * 1024)); then
        mv -f "$BROKER_LOG" "$BROKER_LOG.1"
    fi
    printf '\n===== kafka.sh start %s =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" >>"$BROKER_LOG"

    format_storage_if_needed

    # shellcheck disable=SC2206  # heap/extra opts are deliberately word-split
    local jvm_opts=($HEAP_OPTS ${CAUSELOG_KAFKA_JAVA_OPTS:-}
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true "${LOG_OPTS[@]}")
    say "starting Kafka on 127.0.0.1:$PORT (controller :$CPORT, data $DATA_DIR)"
    # setsid puts the broker in its own session so Ctrl-C in the terminal or a
    # test runner killing our process group does not take it down uncleanly.
    # The inner shell records its own pid and execs java, so the pid file holds
    # the JVM's pid whether or not setsid had to fork. Closing fds 8/9 keeps
    # the broker from holding our locks for its whole lifetime.
    local launcher=(setsid)
    command -v setsid >/dev/null 2>&1 || launcher=(nohup)
    "${launcher[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        "$JAVA_BIN" "${jvm_opts[@]}" -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS" \
        </dev/null >>"$BROKER_LOG" 2>&1 8>&- 9>&- &

    # Hold the lock until the pid file exists so a concurrent start sees this
    # broker instead of launching a second one.
    local i
    for i in $(seq 50); do
        [[ -s "$PID_FILE" ]] && break
        sleep 0.1
    done
    cmd_wait "${CAUSELOG_KAFKA_START_TIMEOUT:-60}"
}

# --------------------------------------------------------------------- wait

pick_python() {
    local py
    for py in "${PYTHON:-}" "$REPO_ROOT/.venv/bin/python"; do
        [[ -n "$py" ]] || continue
        command -v "$py" >/dev/null 2>&1 || continue
        "$py" -c 'import confluent_kafka' 2>/dev/null || continue
        echo "$py"
        return 0
    done
    return 0
}

# Succeeds once a broker in $1 answers a metadata request listing at least
# one broker, which in KRaft only happens after it has caught up with the
# metadata log (a bare open port can precede that).
metadata_probe() {
    local py="$1" bootstrap="$2"
    "$py" - "$bootstrap" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
bootstrap = sys.argv[1]
client = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0})
try:
    md = client.list_topics(timeout=3)
except Exception as exc:  # KafkaException: broker not ready yet
    print(exc)
    sys.exit(1)
if not md.brokers:
    print("metadata lists no brokers yet")
    sys.exit(1)
PY
}

cmd_wait() {
    local timeout_s="${1:-60}"
    [[ "$timeout_s" =~ ^[0-9]+$ ]] || die "wait: TIMEOUT must be whole seconds, got '$timeout_s'"
    local bootstrap="${KAFKA_BOOTSTRAP:-127.0.0.1:$PORT}"
    local first="${bootstrap%%,*}"
    first="${first#*://}"
    local host="${first%:*}" port="${first##*:}"

    local py
    py="$(pick_python)"
    [[ -n "$py" ]] || say "no python with confluent_kafka (set PYTHON); checking the TCP port only"

    local start=$SECONDS last="port $port not open yet" pid
    pid="$(read_pid)"
    while ((SECONDS - start < timeout_s)); do
        # Only our own broker can die under us; fail at once instead of
        # sitting out the whole timeout.
        if [[ -z "${KAFKA_BOOTSTRAP:-}" && -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            show_log_tail
            die "the Kafka broker (pid $pid) exited during startup"
        fi
        if port_open "$host" "$port"; then
            if [[ -z "$py" ]]; then
                say "ready: $bootstrap (TCP)"
                return 0
            fi
            if last="$(metadata_probe "$py" "$bootstrap" 2>&1)"; then
                say "ready: $bootstrap ($((SECONDS - start)) s)"
                return 0
            fi
        fi
        sleep 0.5
    done
    local hint=""
    if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
        show_log_tail
        [[ -n "$(running_pid)" ]] || hint="; no local broker process is running (kafka.sh start)"
    fi
    die "Kafka at $bootstrap not ready after ${timeout_s}s (last check: ${last:-no answer})$hint"
}

# --------------------------------------------------------------- stop/status

cmd_stop() {
    # Nothing can be running from a data dir that doesn't exist, and taking
    # the lock would create it.
    if [[ ! -d "$DATA_DIR" ]]; then
        say "not running"
        return 0
    fi
    take_lock 9 "$DATA_DIR/.lock"
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # Controlled shutdown flushes logs and writes the clean-shutdown marker,
    # which saves a slow log recovery on the next start; give it time.
    local i
    for i in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    local how=clean
    if kill -0 "$pid" 2>/dev/null; then
        say "still alive after 30 s; sending SIGKILL"
        how=SIGKILL
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    printf '===== kafka.sh stop %s (pid %s, %s) =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$pid" "$how" >>"$BROKER_LOG"
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_status() {
    [[ -n "${KAFKA_BOOTSTRAP:-}" ]] && say "note: KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP is set; clients use that, status below is the local broker"
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        if port_open 127.0.0.1 "$PORT"; then
            echo "running (pid $pid, 127.0.0.1:$PORT, data $DATA_DIR)"
        else
            echo "running (pid $pid, 127.0.0.1:$PORT not accepting connections yet, data $DATA_DIR)"
        fi
        return 0
    fi
    echo "stopped (port $PORT, data $DATA_DIR)"
    return 3
}

cmd_reset() {
    # Guard the rm -rf against a mistyped CAUSELOG_HOME: only delete a
    # directory holding nothing but what kafka.sh itself creates there.
    [[ "$CAUSELOG_HOME" != / ]] || die "refusing to reset with CAUSELOG_HOME=/"
    if [[ -d "$DATA_DIR" ]]; then
        local entry
        for entry in "$DATA_DIR"/* "$DATA_DIR"/.[!.]*; do
            [[ -e "$entry" ]] || continue
            case "${entry##*/}" in
                server.properties | server.properties.tmp | kafka.pid | broker.log | broker.log.1 | data | .lock) ;;
                *) die "refusing to delete $DATA_DIR: it contains '${entry##*/}', which kafka.sh did not create" ;;
            esac
        done
    fi
    cmd_stop
    rm -rf "$DATA_DIR"
    say "deleted $DATA_DIR"
}

# --------------------------------------------------------------------- main

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        fetch) cmd_fetch ;;
        start) cmd_start ;;
        wait) cmd_wait "${1:-60}" ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
