#!/usr/bin/env bash
# A single-node KRaft Apache Kafka (broker + controller in one JVM) from Maven Central jars.
#
#   kafka.sh start | stop | status | restart | wait
#
# Settings (environment):
#   KAFKA_PORT             client listener on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  controller listener (default KAFKA_PORT + 1000)
#   KAFKA_RUN_DIR          data, logs and pid (default deploy/local-kafka/.run/<port>)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_SASL_USERS       "user:password,..." switches the client listener to SASL_PLAINTEXT with
#                          SCRAM-SHA-256 and creates these users when the storage is formatted
#   KAFKA_TLS              1: the client listener speaks TLS (SSL; SASL_SSL with KAFKA_SASL_USERS)
#                          with a self-signed certificate for 127.0.0.1/localhost made by the JDK's
#                          keytool at the first TLS start of the run dir; clients trust its PEM,
#                          <run dir>/ca.pem. The controller listener stays PLAINTEXT on loopback.
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-$((port + 1000))}"
run_dir="${KAFKA_RUN_DIR:-$here/.run/$port}"
lib_dir="$here/.cache/lib"
pid_file="$run_dir/kafka.pid"
log_file="$run_dir/server.log"
timeout="${KAFKA_START_TIMEOUT:-90}"
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
tls_dir="$run_dir/tls"
case "${KAFKA_TLS:-0}" in
  0 | "") tls="" ;;
  1) tls=1 ;;
  *) echo "local-kafka[$port]: KAFKA_TLS=${KAFKA_TLS} must be 0 or 1" >&2; exit 2 ;;
esac

log() { echo "local-kafka[$port]: $*" >&2; }

answers() {  # true when something accepts TCP connections on the client port
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid; pid="$(cat "$pid_file")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

resolve_jars() {
  if [[ -f "$lib_dir/.complete" ]]; then return; fi
  log "resolving Kafka jars from Maven Central into $lib_dir"
  rm -rf "$lib_dir"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$lib_dir" -DincludeScope=runtime >&2
  touch "$lib_dir/.complete"
}

keytool_bin() {  # the keytool of the JDK whose java runs the broker
  if [[ -n "${JAVA_HOME:-}" ]]; then echo "$JAVA_HOME/bin/keytool"; return; fi
  local java; java="$(command -v java)" || { log "no java on PATH and no JAVA_HOME"; exit 1; }
  echo "$(dirname "$(readlink -f "$java")")/keytool"
}

make_tls() {  # once per run dir: the broker's key pair, a truststore with its cert, ca.pem
  if [[ -f "$tls_dir/broker.p12" && -f "$tls_dir/truststore.p12" && -f "$tls_dir/store.pass" \
        && -f "$run_dir/ca.pem" ]]; then return; fi
  local keytool pass
  keytool="$(keytool_bin)"
  log "creating a self-signed TLS certificate for 127.0.0.1/localhost in $tls_dir"
  rm -rf "$tls_dir"
  (umask 077; mkdir -p "$tls_dir"; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' \
    >"$tls_dir/store.pass")
  pass="$(cat "$tls_dir/store.pass")"
  # The password reaches keytool through its environment, never its command line.
  if ! (
    umask 077
    export KAFKA_TLS_PASS="$pass"
    "$keytool" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=localhost" -ext "SAN=ip:127.0.0.1,dns:localhost" \
      -storetype PKCS12 -keystore "$tls_dir/broker.p12" -storepass:env KAFKA_TLS_PASS &&
    "$keytool" -exportcert -rfc -alias broker -file "$tls_dir/broker.pem" \
      -storetype PKCS12 -keystore "$tls_dir/broker.p12" -storepass:env KAFKA_TLS_PASS &&
    # The broker connects to its own client listener (inter-broker traffic): it trusts itself.
    "$keytool" -importcert -noprompt -alias broker -file "$tls_dir/broker.pem" \
      -storetype PKCS12 -keystore "$tls_dir/truststore.p12" -storepass:env KAFKA_TLS_PASS
  ) >>"$tls_dir/keytool.log" 2>&1; then
    cat "$tls_dir/keytool.log" >&2
    exit 1
  fi
  cp "$tls_dir/broker.pem" "$run_dir/ca.pem.tmp" && chmod 644 "$run_dir/ca.pem.tmp"
  mv "$run_dir/ca.pem.tmp" "$run_dir/ca.pem"
}

listener_protocol() {  # PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL
  echo "${KAFKA_SASL_USERS:+SASL_}$([[ -n "$tls" ]] && echo SSL || echo PLAINTEXT)"
}

write_config() {
  local listener_proto extra=""
  listener_proto="$(listener_protocol)"
  if [[ -n "${KAFKA_SASL_USERS:-}" ]]; then
    # The controller keeps PLAINTEXT on loopback; only the client listener needs credentials.
    # The broker itself talks to its own client listener, so it needs a login too: the first user.
    local first="${KAFKA_SASL_USERS%%,*}"
    extra="sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"${first%%:*}\" password=\"${first#*:}\";"
  fi
  if [[ -n "$tls" ]]; then
    local pass; pass="$(cat "$tls_dir/store.pass")"
    extra="$extra
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls_dir/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$tls_dir/truststore.p12
ssl.truststore.password=$pass"
  fi
  # Passwords (SCRAM, keystore) are in it: readable by this user only.
  rm -f "$run_dir/server.properties"
  (umask 077; : >"$run_dir/server.properties")
  cat >>"$run_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=CLIENT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=CLIENT://127.0.0.1:$port
inter.broker.listener.name=CLIENT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CLIENT:$listener_proto,CONTROLLER:PLAINTEXT
log.dirs=$run_dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
auto.create.topics.enable=false
$extra
PROPS
  cat >"$run_dir/log4j2.properties" <<'L4J'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
L4J
}

java_cmd() {  # set JAVA_CMD_EXEC=1 to replace the shell, so the pid is the JVM's
  local ex=""; [[ -n "${JAVA_CMD_EXEC:-}" ]] && ex="exec"
  # shellcheck disable=SC2086
  $ex "$java_bin" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$run_dir" \
    -Dlog4j2.configurationFile="$run_dir/log4j2.properties" \
    -cp "$lib_dir/*" "$@"
}

format_storage() {
  [[ -f "$run_dir/data/meta.properties" ]] && return
  local cluster_id args=()
  # URL-safe base64 of 16 random bytes, not starting with '-'.
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | sed 's/^-/A/')"
  if [[ -n "${KAFKA_SASL_USERS:-}" ]]; then
    local pairs pair
    IFS=',' read -ra pairs <<<"$KAFKA_SASL_USERS"
    for pair in "${pairs[@]}"; do
      args+=(--add-scram "SCRAM-SHA-256=[name=${pair%%:*},password=${pair#*:}]")
    done
  fi
  log "formatting storage in $run_dir/data (cluster $cluster_id)"
  java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$run_dir/server.properties" \
    "${args[@]}" >>"$run_dir/format.log" 2>&1 || { cat "$run_dir/format.log" >&2; exit 1; }
}

wait_ready() {
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if grep -q "Kafka Server started" "$log_file" 2>/dev/null && answers; then return 0; fi
    if [[ -f "$pid_file" ]] && ! running_pid >/dev/null; then
      log "the broker exited during start-up; last lines of $log_file:"
      tail -n 30 "$log_file" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "no answer on 127.0.0.1:$port after ${timeout}s; see $log_file"
  return 1
}

start() {
  if pid="$(running_pid)"; then log "already running (pid $pid)"; return 0; fi
  if answers; then log "something else already answers on 127.0.0.1:$port; not starting another"; return 0; fi
  local t0=$SECONDS
  resolve_jars
  mkdir -p "$run_dir"
  if [[ -n "$tls" ]]; then make_tls; fi
  write_config
  format_storage
  : >"$log_file"
  # SIGINT ignored (the JVM keeps an ignored SIGINT ignored): a Ctrl-C meant for `make run` must
  # not stop the broker under a worker still making its final commit; `stop` sends SIGTERM.
  (trap '' INT; JAVA_CMD_EXEC=1 java_cmd kafka.Kafka "$run_dir/server.properties" \
    >>"$run_dir/stdout.log" 2>&1 </dev/null) &
  echo $! >"$pid_file"
  wait_ready
  log "ready on 127.0.0.1:$port, $(listener_protocol)${tls:+ (CA: $run_dir/ca.pem)}" \
    "(pid $(cat "$pid_file"), $((SECONDS - t0))s)"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$pid_file"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "still up after 30 s, killing"; kill -KILL "$pid"; fi
  rm -f "$pid_file"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if pid="$(running_pid)"; then echo "running (pid $pid) on 127.0.0.1:$port"; else echo "not running"; exit 1; fi ;;
  wait) wait_ready ;;
  *) echo "usage: $0 start|stop|restart|status|wait" >&2; exit 2 ;;
esac
