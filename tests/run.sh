#!/usr/bin/env bash
# `make test`: the whole suite, unit and integration, against a real local Kafka.
# Installs what the tests need besides Python (kcat, prometheus: deploy/install-test-deps.sh, as
# root; otherwise it says what to install), starts the local broker if nothing answers on
# KAFKA_PORT, and stops it again only if it did.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-test-deps.sh
port="${KAFKA_PORT:-9092}"
started=""
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  deploy/local-kafka/kafka.sh start
  started=1
fi
cleanup() { if [[ -n "$started" ]]; then deploy/local-kafka/kafka.sh stop || true; fi; }
trap cleanup EXIT
export STREAMS_TEST_BROKER="${STREAMS_TEST_BROKER:-kafka://127.0.0.1:$port}"
status=0
.venv/bin/python -m pytest -p no:cacheprovider -rfEs "$@" || status=$?
exit "$status"
