#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker+controller) on
# loopback, for developers and CI. The broker jars come from Maven Central via
# kafka/pom.xml; nothing else is downloaded.
#
# Besides the PLAINTEXT listener (127.0.0.1:9092), the broker has a SASL_SSL one
# (127.0.0.1:9094), as managed clusters do: TLS with a certificate made by the JDK's
# keytool and signed by a CA of its own ($KAFKA_HOME/tls/ca.pem), and SASL with
# SCRAM-SHA-256/512 and PLAIN (user "adstream", password "adstream-secret"; user
# "nobody", password "nobody-secret", who may do nothing) and OAUTHBEARER (unsecured
# tokens, as Kafka's default validator takes: for tests only). The SCRAM users are
# created when the storage is formatted. An authorizer is on: the PLAINTEXT listener's
# anonymous user and "adstream" are super users; everyone else needs ACLs.
#
# A third listener (SSL, 127.0.0.1:9095) asks every client for a certificate (mutual TLS)
# signed by that CA: $KAFKA_HOME/tls/client.pem and client-key.pem are one, for the
# principal "CN=adstream-client", also a super user ('mtls-flags' prints the flags).
#
# Usage: scripts/kafka.sh <command>
#   up            fetch jars (first run only), format storage (first run only),
#                 start the broker and wait until it answers. Safe to run twice.
#   down [--wipe] stop the broker (SIGTERM, then SIGKILL after $KAFKA_STOP_TIMEOUT s).
#                 --wipe also deletes its data and logs (the jars are kept).
#   wipe          same as `down --wipe`.
#   status        say whether it runs and where (exit 0 if running and answering,
#                 1 if not running, 2 if running but not answering).
#   fetch         only fetch the jars into $KAFKA_HOME/lib.
#   bootstrap     print the bootstrap address (127.0.0.1:$KAFKA_PORT).
#   sasl-flags    print the adstream flags that reach the SASL_SSL listener (the
#                 password goes in ADSTREAM_SASL_PASSWORD: see the README).
#   mtls-flags    print the adstream flags that reach the mutual-TLS listener.
#   create-topic NAME [PARTITIONS] [KEY=VALUE...]
#                 create a topic (3 partitions by default) with topic configs,
#                 e.g. create-topic ad-impressions 3 max.message.bytes=8388608
#   add-partitions NAME TOTAL
#                 grow a topic to TOTAL partitions (both input topics must keep equal counts)
#   tool CLASS [ARGS...]
#                 run a Kafka CLI class from the same jars with quiet logging, e.g.
#                 scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#                   --bootstrap-server 127.0.0.1:9092 --list
#
# Environment:
#   KAFKA_HOME             state directory (default: <repo>/.kafka): lib/, data/,
#                          server.properties, broker.log, broker.pid
#   KAFKA_LIB              where the jars are (default: $KAFKA_HOME/lib); a second
#                          broker can share the first one's
#   KAFKA_TLS              where the CA, the certificates and keys are (default:
#                          $KAFKA_HOME/tls, made on first 'up'); a second broker can share
#                          the first one's (its 'wipe' then leaves them)
#   KAFKA_PORT             PLAINTEXT listener port (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port (default 9093)
#   KAFKA_SASL_SSL_PORT    SASL_SSL listener port (default 9094)
#   KAFKA_SSL_PORT         mutual-TLS (SSL) listener port (default 9095)
#   KAFKA_HEAP_OPTS        JVM heap options (default "-Xms256m -Xmx1g")
#   KAFKA_JVM_OPTS         extra JVM options for the broker (default empty)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 120)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   JAVA_HOME / JAVA       Java to use (default: $JAVA_HOME/bin/java, else java on PATH)
#   MVN                    Maven command (default: mvn)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$REPO_ROOT/kafka/pom.xml"
KAFKA_HOME="${KAFKA_HOME:-$REPO_ROOT/.kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-9095}"
# Each partition costs the broker ~40 KB of heap: a data directory that kept every test run's
# topics (11,000 partitions) filled 512 MB, and the collector's pauses then cost the broker its
# session (see broker.session.timeout.ms below). 'wipe' empties it.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"
# Above broker.session.timeout.ms (60 s, below): after an unclean stop the controller may hold
# the node's old registration until that session runs out.
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
MVN="${MVN:-mvn}"

LIB="${KAFKA_LIB:-$KAFKA_HOME/lib}"
DATA="$KAFKA_HOME/data"
CONF="$KAFKA_HOME/server.properties"
LOG4J_CONF="$KAFKA_HOME/log4j.properties"
TOOLS_LOG4J_CONF="$KAFKA_HOME/tools-log4j.properties"
LOG="$KAFKA_HOME/broker.log"
PIDFILE="$KAFKA_HOME/broker.pid"
FETCH_MARKER="$LIB/.fetched"
TLS="${KAFKA_TLS:-$KAFKA_HOME/tls}"
# Test credentials, not secrets: this broker is for development and CI on loopback.
TLS_PASSWORD="adstream-tls"
SASL_USER="adstream"
SASL_PASSWORD="adstream-secret"
DENIED_USER="nobody"
DENIED_PASSWORD="nobody-secret"
CLIENT_DN="CN=adstream-client"

# Main classes of the pinned release (Kafka 3.9.x).
BROKER_MAIN="kafka.Kafka"
STORAGE_TOOL_MAIN="kafka.tools.StorageTool"
# Logged by KafkaRaftServer once the broker is unfenced and serving requests.
STARTED_LINE="Kafka Server started"

msg() { echo "kafka: $*"; }
err() { echo "kafka: error: $*" >&2; }
die() { err "$@"; exit 1; }

kafka_version() {
  local v
  v="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"
  [[ -n "$v" ]] || die "cannot read <kafka.version> from $POM"
  echo "$v"
}

java_bin() {
  if [[ -n "${JAVA:-}" ]]; then
    echo "$JAVA"
  elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    echo "$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "no java found (set JAVA_HOME; Kafka needs Java 11+, 17 recommended)"
  fi
}

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# The jars are complete when the marker written after a successful Maven run
# matches the current pom.xml (so editing the pom triggers a re-fetch).
jars_fetched() {
  [[ -f "$FETCH_MARKER" ]] && [[ "$(cat "$FETCH_MARKER")" == "$(pom_hash)" ]] \
    && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

fetch_jars() {
  jars_fetched && return 0
  command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') not found; it is needed once to fetch the Kafka jars"
  local version tmp
  version="$(kafka_version)"
  msg "fetching Apache Kafka $version jars with Maven (first run only)..."
  tmp="$LIB.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! "$MVN" -B -q -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$KAFKA_HOME/maven.log" 2>&1; then
    tail -n 40 "$KAFKA_HOME/maven.log" >&2 || true
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka jars (full output: $KAFKA_HOME/maven.log)"
  fi
  compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || { rm -rf "$tmp"; die "Maven ran but kafka_2.13-$version.jar is missing"; }
  pom_hash >"$tmp/.fetched"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  msg "$(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
}

keytool_bin() {
  local java
  java="$(java_bin)"
  if [[ -x "$(dirname "$java")/keytool" ]]; then
    echo "$(dirname "$java")/keytool"
  elif command -v keytool >/dev/null 2>&1; then
    command -v keytool
  else
    die "no keytool found (it comes with the JDK)"
  fi
}

# A CA of the broker's own, the broker's certificate (for localhost and 127.0.0.1) signed by
# it, a client certificate signed by it (PEM, its key unencrypted PKCS#8: keytool cannot write a
# key out, so a few lines of Java run by the JDK's source launcher do), and a second, unrelated
# CA for tests that need an untrusted one, with a client certificate of its own. Made once, kept
# in $TLS.
make_tls() {
  [[ -f "$TLS/broker.p12" && -f "$TLS/ca.pem" && -f "$TLS/other-ca.pem" && -s "$TLS/client-key.pem" && -s "$TLS/other-client-key.pem" ]] && return 0
  local kt tmp
  kt="$(keytool_bin)"
  tmp="$KAFKA_HOME/tls.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  msg "making a CA and the broker's TLS certificate with keytool..."
  # Each step exits the subshell on failure itself: `set -e` does not apply to a subshell on the
  # left of `||`.
  (
    cd "$tmp" || exit 1
    k() { "$kt" "$@" >>keytool.log 2>&1 || exit 1; }
    k -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=adstream test CA" \
      -ext bc:c -keystore ca.p12 -storetype PKCS12 -storepass "$TLS_PASSWORD"
    k -exportcert -alias ca -rfc -keystore ca.p12 -storepass "$TLS_PASSWORD" -file ca.pem
    k -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=localhost" \
      -keystore broker.p12 -storetype PKCS12 -storepass "$TLS_PASSWORD"
    k -certreq -alias broker -keystore broker.p12 -storepass "$TLS_PASSWORD" -file broker.csr
    k -gencert -alias ca -keystore ca.p12 -storepass "$TLS_PASSWORD" -infile broker.csr -outfile broker.pem \
      -rfc -validity 3650 -ext SAN=dns:localhost,ip:127.0.0.1 -ext ku:c=digitalSignature,keyEncipherment -ext eku=serverAuth
    k -importcert -alias ca -file ca.pem -keystore broker.p12 -storepass "$TLS_PASSWORD" -noprompt
    k -importcert -alias broker -file broker.pem -keystore broker.p12 -storepass "$TLS_PASSWORD" -noprompt
    k -genkeypair -alias other -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=some other CA" \
      -ext bc:c -keystore other.p12 -storetype PKCS12 -storepass "$TLS_PASSWORD"
    k -exportcert -alias other -rfc -keystore other.p12 -storepass "$TLS_PASSWORD" -file other-ca.pem
    k -genkeypair -alias client -keyalg RSA -keysize 2048 -validity 3650 -dname "$CLIENT_DN" \
      -keystore client.p12 -storetype PKCS12 -storepass "$TLS_PASSWORD"
    k -certreq -alias client -keystore client.p12 -storepass "$TLS_PASSWORD" -file client.csr
    k -gencert -alias ca -keystore ca.p12 -storepass "$TLS_PASSWORD" -infile client.csr -outfile client.pem \
      -rfc -validity 3650 -ext ku:c=digitalSignature,keyEncipherment -ext eku=clientAuth
    cat >ExportKey.java <<'JAVA' || exit 1
import java.io.FileInputStream;
import java.security.KeyStore;
import java.util.Base64;

public class ExportKey {
    public static void main(String[] args) throws Exception {
        char[] password = args[1].toCharArray();
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[0])) { store.load(in, password); }
        byte[] pkcs8 = store.getKey(args[2], password).getEncoded();
        String body = Base64.getMimeEncoder(64, "\n".getBytes()).encodeToString(pkcs8);
        System.out.print("-----BEGIN PRIVATE KEY-----\n" + body + "\n-----END PRIVATE KEY-----\n");
    }
}
JAVA
    # And one the broker does not trust (signed by the other CA), for tests of a refusal.
    k -genkeypair -alias client -keyalg RSA -keysize 2048 -validity 3650 -dname "$CLIENT_DN" \
      -keystore other-client.p12 -storetype PKCS12 -storepass "$TLS_PASSWORD"
    k -certreq -alias client -keystore other-client.p12 -storepass "$TLS_PASSWORD" -file other-client.csr
    k -gencert -alias other -keystore other.p12 -storepass "$TLS_PASSWORD" -infile other-client.csr \
      -outfile other-client.pem -rfc -validity 3650 -ext ku:c=digitalSignature,keyEncipherment -ext eku=clientAuth
    for name in client other-client; do
      "$(java_bin)" ExportKey.java "$name.p12" "$TLS_PASSWORD" client >"$name-key.pem" 2>>keytool.log || exit 1
      [[ -s "$name-key.pem" ]] || exit 1
      chmod 600 "$name-key.pem"
    done
    rm -f ExportKey.java client.csr other-client.csr broker.csr
  ) || { cat "$tmp/keytool.log" >&2 || true; rm -rf "$tmp"; die "keytool failed"; }
  rm -rf "$TLS"
  mv "$tmp" "$TLS"
}

write_config() {
  mkdir -p "$DATA"
  make_tls
  cat >"$CONF" <<EOF
# Written by scripts/kafka.sh on every 'up'; edit the script, not this file.
# Single combined broker+controller node (KRaft, no ZooKeeper) on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT},SASL_SSL://127.0.0.1:${KAFKA_SASL_SSL_PORT},SSL://127.0.0.1:${KAFKA_SSL_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},SASL_SSL://127.0.0.1:${KAFKA_SASL_SSL_PORT},SSL://127.0.0.1:${KAFKA_SSL_PORT}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
log.dirs=${DATA}

# The SASL_SSL listener: what a managed cluster looks like to a client.
ssl.keystore.type=PKCS12
ssl.keystore.location=${TLS}/broker.p12
ssl.keystore.password=${TLS_PASSWORD}
ssl.key.password=${TLS_PASSWORD}
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${SASL_USER}="${SASL_PASSWORD}" user_${DENIED_USER}="${DENIED_PASSWORD}";
# Unsecured tokens (alg none), as Kafka's default validator takes them: for tests only.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";

# The SSL listener: mutual TLS, a client certificate signed by the CA required; its subject
# is the principal (User:${CLIENT_DN}).
listener.name.ssl.ssl.client.auth=required
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=${TLS}/ca.pem

# ACLs: the PLAINTEXT listener (anonymous) and the SASL user adstream may do anything;
# anyone else ("nobody") nothing, for the tests of a missing permission.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:${SASL_USER};User:broker;User:${CLIENT_DN}

# One node: every replication factor / ISR is 1.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Internal topics are created on first use; few partitions make that fast.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# Tests create their own topics and want groups to form immediately.
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
# A crashed host's open transaction is aborted within a second of its timeout (default: up to
# 10 s later), so that failover tests measure the host, not this sweep.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
# The controller fences a broker whose heartbeats it has not handled for this long (default 9 s),
# and with one node that leaves every partition without a leader until it is unfenced. On a
# machine the tests saturate, the controller fell that far behind ("controller event queue
# overloaded"), and the seconds without leaders made topic creation fail and stalled one input
# partition long enough for the hosts' idle timeout to turn its on-time events late. One node
# has no other broker to fail over to, so it waits longer before giving up on itself.
broker.session.timeout.ms=60000

# A small machine: fewer threads than the defaults.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  write_log4j_configs
}

write_log4j_configs() {
  cat >"$LOG4J_CONF" <<'EOF'
# Broker logging (reload4j), written by scripts/kafka.sh; stdout goes to broker.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.controller=INFO
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.clients.admin.AdminClientConfig=WARN
log4j.logger.org.apache.kafka.clients.producer.ProducerConfig=WARN
log4j.logger.org.apache.kafka.clients.consumer.ConsumerConfig=WARN
EOF

  cat >"$TOOLS_LOG4J_CONF" <<'EOF'
# Logging for Kafka CLI classes run from the same jars: warnings only, to stderr.
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.appender.stderr.Target=System.err
EOF
}

format_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then
    return 0
  fi
  local cluster_id java
  java="$(java_bin)"
  # A random KRaft cluster id: 16 random bytes, base64url without padding (22 chars). One that
  # starts with '-' (1 in 64) would be read as an option by the storage tool: draw again.
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  msg "formatting KRaft storage in $DATA (cluster id $cluster_id)..."
  # The SCRAM users are created with the storage, as KRaft allows (no broker needed).
  if ! "$java" -Dlog4j.configuration="file:$TOOLS_LOG4J_CONF" -cp "$LIB/*" \
      "$STORAGE_TOOL_MAIN" format -t "$cluster_id" -c "$CONF" --ignore-formatted \
      --add-scram "SCRAM-SHA-256=[name=${SASL_USER},password=${SASL_PASSWORD}]" \
      --add-scram "SCRAM-SHA-512=[name=${SASL_USER},password=${SASL_PASSWORD}]" \
      --add-scram "SCRAM-SHA-256=[name=${DENIED_USER},password=${DENIED_PASSWORD}]" \
      --add-scram "SCRAM-SHA-512=[name=${DENIED_USER},password=${DENIED_PASSWORD}]" \
      >"$KAFKA_HOME/format.log" 2>&1; then
    cat "$KAFKA_HOME/format.log" >&2 || true
    die "formatting the storage failed"
  fi
  touch "$DATA/.scram-users"
}

# Storage formatted by an older version of this script has no SCRAM users: add them through
# the running broker (ConfigCommand over the PLAINTEXT listener).
ensure_scram_users() {
  [[ -f "$DATA/.scram-users" ]] && return 0
  local java user password
  java="$(java_bin)"
  msg "adding the SCRAM users to storage formatted without them..."
  local pair mechanism
  for pair in "$SASL_USER:$SASL_PASSWORD" "$DENIED_USER:$DENIED_PASSWORD"; do
    user="${pair%%:*}"
    password="${pair#*:}"
    # One mechanism per request: the broker refuses to alter a user's credentials twice in one.
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      "$java" -Xmx256m -Dlog4j.configuration="file:$TOOLS_LOG4J_CONF" -cp "$LIB/*" kafka.admin.ConfigCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users --entity-name "$user" \
        --add-config "${mechanism}=[password=${password}]" \
        >>"$KAFKA_HOME/format.log" 2>&1 || die "adding SCRAM user $user failed (see $KAFKA_HOME/format.log)"
    done
  done
  touch "$DATA/.scram-users"
}

# Is process $1 alive? A zombie (exited, not yet reaped by a non-reaping
# init) counts as dead.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

# Is $1 the pid of the broker of this KAFKA_HOME?
is_our_broker() {
  local pid="$1" cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *" $BROKER_MAIN $CONF"* ]]
}

# Prints the broker's pid (from the pid file, or by its exact config path if
# the pid file is gone) and returns 0 if it runs.
broker_pid() {
  local pid=""
  if [[ -f "$PIDFILE" ]]; then
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if is_our_broker "$pid"; then echo "$pid"; return 0; fi
  fi
  local f
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    if is_our_broker "$pid"; then echo "$pid"; return 0; fi
  done 2>/dev/null
  return 1
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# A real Kafka request: ApiVersions v0 (api key 18, correlation id 7, client
# id "probe"); answered once the broker processes requests. Checks the
# correlation id and error code 0 in the response header.
api_versions_ok() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 5 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/"$1" || exit 1
    printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x07\x00\x05probe" >&3
    hdr="$(head -c 10 <&3 | od -An -tx1 | tr -d " \n")"
    [[ "${hdr:8:12}" == "000000070000" ]]
  ' api-versions-probe "$1" 2>/dev/null
}

# The listener address in the config the broker was started with.
listening_on() {
  local l
  l="$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/\([^,]*\).*/\1/p' "$CONF" 2>/dev/null | head -n1)"
  echo "${l:-127.0.0.1:$KAFKA_PORT}"
}

broker_answering() {
  local addr port
  addr="$(listening_on)"
  port="${addr##*:}"
  grep -q "$STARTED_LINE" "$LOG" 2>/dev/null && api_versions_ok "$port"
}

# The first ERROR or FATAL lines of the log and what follows each (the cause: a port in use, a
# bad setting); the tail of a failed start is mostly the shutdown it set off.
first_errors() {
  grep -m 3 -A 3 -E '^\[[^]]*\] (ERROR|FATAL)' "$LOG" >&2 || true
  echo "..." >&2
}

wait_until_answering() {
  local pid="$1" start=$SECONDS
  while (( SECONDS - start < KAFKA_START_TIMEOUT )); do
    if ! alive "$pid"; then
      err "the broker exited during start-up; its first errors, then the last lines of $LOG:"
      first_errors
      tail -n 40 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if broker_answering; then
      return 0
    fi
    sleep 0.5
  done
  err "the broker did not answer within ${KAFKA_START_TIMEOUT}s; its first errors, then the last lines of $LOG:"
  first_errors
  tail -n 40 "$LOG" >&2 || true
  err "it is still running (pid $pid); 'scripts/kafka.sh down' stops it"
  exit 1
}

cmd_up() {
  local pid t0=$SECONDS version
  version="$(kafka_version)"
  if pid="$(broker_pid)"; then
    if ! jars_fetched; then
      msg "warning: kafka/pom.xml changed since the jars were fetched; run 'down' then 'up' to use it"
    fi
    if broker_answering; then
      ensure_scram_users
      msg "broker already running on $(listening_on) (pid $pid)"
      return 0
    fi
    msg "broker already starting (pid $pid); waiting until it answers..."
    wait_until_answering "$pid"
    msg "broker up on $(listening_on) (KRaft, node 1, pid $pid)"
    return 0
  fi
  rm -f "$PIDFILE"

  fetch_jars
  if api_versions_ok "$KAFKA_PORT"; then
    msg "a broker started elsewhere (not from KAFKA_HOME=$KAFKA_HOME) answers on 127.0.0.1:$KAFKA_PORT: using it"
    return 0
  fi
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_SSL_PORT" "$KAFKA_SSL_PORT"; do
    if port_open "$port"; then
      die "port 127.0.0.1:$port is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_SSL_PORT / KAFKA_SSL_PORT)"
    fi
  done
  write_config
  format_storage
  # Every test run leaves its topics behind (fresh names each time). Thousands of partitions slow
  # the broker's start and fill its heap (~40 KB each), and a broker short of heap stalls.
  local partitions
  partitions="$(find "$DATA" -mindepth 1 -maxdepth 1 -type d -name '*-[0-9]*' 2>/dev/null | wc -l)"
  if ((partitions > 5000)); then
    msg "warning: $partitions partitions kept from earlier runs in $DATA; 'scripts/kafka.sh wipe' empties it (test data only)"
  fi

  local java
  java="$(java_bin)"
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  msg "starting Apache Kafka $version (KRaft) on 127.0.0.1:$KAFKA_PORT..."
  # setsid: the broker outlives this shell and its process group; the inner
  # shell writes its own pid and execs java, so the pid file is java's pid.
  # shellcheck disable=SC2086,SC2016  # word-split JVM options; $$ is the inner shell's
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$java" $KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$LOG4J_CONF" \
    $KAFKA_JVM_OPTS -cp "$LIB/*" "$BROKER_MAIN" "$CONF" \
    </dev/null >"$LOG" 2>&1 9>&- &
  local _
  for _ in $(seq 1 50); do
    [[ -s "$PIDFILE" ]] && break
    sleep 0.1
  done
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || die "the broker did not start (see $LOG)"
  wait_until_answering "$pid"
  ensure_scram_users
  msg "broker up on 127.0.0.1:$KAFKA_PORT (KRaft, node 1, pid $pid) in $((SECONDS - t0))s; SASL_SSL on 127.0.0.1:$KAFKA_SASL_SSL_PORT, mutual TLS on 127.0.0.1:$KAFKA_SSL_PORT ('sasl-flags' and 'mtls-flags' print how to reach them)"
}

cmd_down() {
  local wipe=0 arg
  for arg in "$@"; do
    case "$arg" in
      --wipe) wipe=1 ;;
      *) die "down: unknown option '$arg'" ;;
    esac
  done
  local pid
  if pid="$(broker_pid)"; then
    msg "stopping broker (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || true
    local start=$SECONDS
    while alive "$pid" && (( SECONDS - start < KAFKA_STOP_TIMEOUT )); do
      sleep 0.2
    done
    if alive "$pid"; then
      msg "broker did not stop within ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      start=$SECONDS
      while alive "$pid" && (( SECONDS - start < 10 )); do sleep 0.1; done
      alive "$pid" && die "broker (pid $pid) still alive after SIGKILL"
    fi
    msg "broker stopped"
  else
    msg "broker not running"
  fi
  rm -f "$PIDFILE"
  if (( wipe )); then
    rm -rf "$DATA" "$CONF" "$LOG" "$LOG.1" "$LOG4J_CONF" "$TOOLS_LOG4J_CONF" "$KAFKA_HOME/format.log"
    [[ -n "${KAFKA_TLS:-}" ]] || rm -rf "$TLS"
    msg "data wiped ($DATA); jars kept in $LIB"
  fi
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    if broker_answering; then
      msg "broker running on $(listening_on) (KRaft, node 1, pid $pid, KAFKA_HOME=$KAFKA_HOME)"
      return 0
    fi
    msg "broker process running (pid $pid) but not answering on $(listening_on) yet; log: $LOG"
    return 2
  fi
  if api_versions_ok "$KAFKA_PORT"; then
    msg "a broker answers on 127.0.0.1:$KAFKA_PORT, but not one started from KAFKA_HOME=$KAFKA_HOME (another checkout's?): it is usable, and 'down' here will not stop it"
    return 0
  fi
  local formatted="no data"
  [[ -f "$DATA/meta.properties" ]] && formatted="formatted data in $DATA"
  msg "broker not running (KAFKA_HOME=$KAFKA_HOME, $formatted)"
  return 1
}

cmd_sasl_flags() {
  [[ -f "$TLS/ca.pem" ]] || die "no TLS material yet: run 'scripts/kafka.sh up' first"
  echo "--brokers 127.0.0.1:$KAFKA_SASL_SSL_PORT --security-protocol sasl_ssl --sasl-mechanism SCRAM-SHA-512 --sasl-username $SASL_USER --ssl-ca-location $TLS/ca.pem"
  echo "# and the password in the environment: export ADSTREAM_SASL_PASSWORD=$SASL_PASSWORD" >&2
}

cmd_mtls_flags() {
  [[ -f "$TLS/client-key.pem" ]] || die "no client certificate yet: run 'scripts/kafka.sh down' then 'up'"
  echo "--brokers 127.0.0.1:$KAFKA_SSL_PORT --security-protocol ssl --ssl-ca-location $TLS/ca.pem --ssl-certificate-location $TLS/client.pem --ssl-key-location $TLS/client-key.pem"
}

cmd_create_topic() {
  (( $# >= 1 )) || die "usage: scripts/kafka.sh create-topic NAME [PARTITIONS] [KEY=VALUE...]"
  local name="$1" partitions="${2:-3}" config=()
  shift; (( $# >= 1 )) && shift
  local kv
  for kv in "$@"; do config+=(--config "$kv"); done
  cmd_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create \
    --topic "$name" --partitions "$partitions" --replication-factor 1 "${config[@]}"
}

cmd_add_partitions() {
  (( $# == 2 )) || die "usage: scripts/kafka.sh add-partitions NAME TOTAL (the partition count it should have)"
  cmd_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
    --topic "$1" --partitions "$2"
}

cmd_tool() {
  (( $# >= 1 )) || die "usage: scripts/kafka.sh tool CLASS [ARGS...]"
  jars_fetched || die "jars not fetched yet (run 'scripts/kafka.sh fetch' or 'up')"
  [[ -f "$TOOLS_LOG4J_CONF" ]] || write_log4j_configs
  local java
  java="$(java_bin)"
  exec "$java" -Xmx256m -Dlog4j.configuration="file:$TOOLS_LOG4J_CONF" -cp "$LIB/*" "$@"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up|down|wipe|fetch)
      mkdir -p "$KAFKA_HOME"
      # Serialize concurrent up/down calls on the same KAFKA_HOME.
      exec 9>"$KAFKA_HOME/.lock"
      flock 9
      case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        wipe) cmd_down --wipe ;;
        fetch) fetch_jars; msg "jars ready in $LIB" ;;
      esac
      ;;
    status) cmd_status ;;
    bootstrap) echo "127.0.0.1:$KAFKA_PORT" ;;
    sasl-flags) cmd_sasl_flags ;;
    mtls-flags) cmd_mtls_flags ;;
    create-topic) cmd_create_topic "$@" ;;
    add-partitions) cmd_add_partitions "$@" ;;
    tool) cmd_tool "$@" ;;
    ""|-h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (try: up, down [--wipe], wipe, status, fetch, bootstrap, sasl-flags, mtls-flags, create-topic, add-partitions, tool)" ;;
  esac
}

main "$@"
