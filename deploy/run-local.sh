#!/usr/bin/env bash
# `make run`: the local Kafka, the worker and a demo producer; Ctrl-C stops what this started.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${KAFKA_PORT:-9092}"
export STREAMS_BROKER="${STREAMS_BROKER:-kafka://127.0.0.1:$port}"
export STREAMS_DATA_DIR="${STREAMS_DATA_DIR:-.data}"
kafka_started=""
pids=()

cleanup() {
  trap - INT TERM EXIT
  echo "make run: stopping..." >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Poll rather than `wait`: inside this trap `wait` can return at once, and stopping Kafka
  # under a worker still making its final commit leaves that worker retrying forever.
  for _ in $(seq 300); do
    alive=""
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ -z "$alive" ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n "$kafka_started" ]]; then deploy/local-kafka/kafka.sh stop || true; fi
}
trap cleanup INT TERM EXIT

if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  deploy/local-kafka/kafka.sh start
  kafka_started=1
fi

.venv/bin/faust -A streams worker -l info &
pids+=($!)
# The demo producer waits for the worker to create the topics, then sends a steady trickle in
# short rounds: each round's Xingtu tasks, cart-adds and orders interleaved in time order.
# A stop signal goes on to the running round and ends the loop: a round started after it would
# outlive the broker and retry against it forever.
(
  child=""
  trap 'if [[ -n "$child" ]]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 0' \
    INT TERM
  while true; do
    .venv/bin/python -m streams.loadgen --rate "${DEMO_RATE:-50}" --duration "${DEMO_ROUND:-120}" \
      --seed "$RANDOM" &
    child=$!
    wait "$child" || exit 0
    child=""
  done
) &
pids+=($!)
echo "make run: worker and demo producer running; metrics: curl localhost:${STREAMS_WEB_PORT:-6066}/metrics; Ctrl-C stops" >&2
wait -n "${pids[@]}" || true
