#!/usr/bin/env bash
# Creates the six live-commerce-streams topics (idempotent: --if-not-exists) and checks that the
# three input topics are co-partitioned (same partition count), which the worker requires.
#
# Runs in the apache/kafka image (docker-compose service `topic-init`) or anywhere with Kafka's
# CLI tools. Settings (environment):
#   KAFKA_BOOTSTRAP             bootstrap servers (default kafka:9092)
#   STREAMS_TOPIC_PREFIX        prefix of every topic name, as the worker's (default "")
#   STREAMS_TOPIC_PARTITIONS    partitions per topic (default 4)
#   STREAMS_TOPIC_REPLICATION   replication factor (default 1)
#   INPUT_RETENTION_MS          retention.ms of cart-adds, orders, xingtu-tasks (default
#                               STREAMS_TOPIC_RETENTION_MS, else -1: forever; events dated 2020 carry
#                               2020 timestamps and would be deleted at once by a time retention)
#   OUTPUT_RETENTION_MS         retention.ms of rejections, fees, dead-letters, policy-shadow,
#                               advisories (default as inputs)
#   KAFKA_COMMAND_CONFIG        client properties file for SASL/TLS (optional)
#   KAFKA_TOPICS                the kafka-topics command (default /opt/kafka/bin/kafka-topics.sh)
set -euo pipefail

bootstrap="${KAFKA_BOOTSTRAP:-kafka:9092}"
prefix="${STREAMS_TOPIC_PREFIX:-}"
partitions="${STREAMS_TOPIC_PARTITIONS:-4}"
replication="${STREAMS_TOPIC_REPLICATION:-1}"
input_retention="${INPUT_RETENTION_MS:-${STREAMS_TOPIC_RETENTION_MS:--1}}"
output_retention="${OUTPUT_RETENTION_MS:-$input_retention}"
read -r -a kafka_topics <<<"${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

input_topics=(cart-adds orders xingtu-tasks)
output_topics=(rejections fees dead-letters policy-shadow advisories)

log() { echo "topic-init: $*" >&2; }

topics_cmd() {
  local extra=()
  [[ -n "${KAFKA_COMMAND_CONFIG:-}" ]] && extra=(--command-config "$KAFKA_COMMAND_CONFIG")
  "${kafka_topics[@]}" --bootstrap-server "$bootstrap" "${extra[@]}" "$@"
}

create() {  # create NAME RETENTION_MS
  log "creating ${prefix}$1 (partitions=$partitions, replication=$replication, retention.ms=$2)"
  topics_cmd --create --if-not-exists --topic "${prefix}$1" \
    --partitions "$partitions" --replication-factor "$replication" \
    --config "retention.ms=$2"
}

partition_count() {  # partition_count NAME -> the topic's PartitionCount
  topics_cmd --describe --topic "${prefix}$1" \
    | sed -n 's/.*PartitionCount:[[:space:]]*\([0-9][0-9]*\).*/\1/p' | head -n 1
}

for topic in "${input_topics[@]}"; do create "$topic" "$input_retention"; done
for topic in "${output_topics[@]}"; do create "$topic" "$output_retention"; done
# the policy versions: compacted, one partition (every worker reads all of it, in one order)
log "creating ${prefix}policies (compacted, 1 partition, replication=$replication)"
topics_cmd --create --if-not-exists --topic "${prefix}policies" \
  --partitions 1 --replication-factor "$replication" --config cleanup.policy=compact

# --if-not-exists keeps existing topics as they are: make sure the inputs still agree.
expected=""
for topic in "${input_topics[@]}"; do
  count="$(partition_count "$topic")"
  if [[ -z "$count" ]]; then
    log "cannot read the partition count of ${prefix}${topic}"
    exit 1
  fi
  if [[ -z "$expected" ]]; then
    expected="$count"
  elif [[ "$count" != "$expected" ]]; then
    log "${prefix}${topic} has $count partitions but ${prefix}${input_topics[0]} has $expected:" \
      "the input topics must be co-partitioned (same count)"
    exit 1
  fi
done
if [[ "$expected" != "$partitions" ]]; then
  log "note: the input topics already existed with $expected partitions (asked for $partitions)"
fi
log "ok: ${input_topics[*]/#/$prefix} ${output_topics[*]/#/$prefix} ${prefix}policies ($expected input partitions)"
