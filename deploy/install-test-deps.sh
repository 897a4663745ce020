#!/usr/bin/env bash
# What the test suite needs besides Python: kcat, prometheus (brings promtool), Java 17, Maven.
# Called by `make test` (tests/run.sh) and by .ci/run. Installs what is missing with apt-get when
# run as root; otherwise prints one line saying what to install and exits 1. Nothing missing: 0.
set -euo pipefail

need=()
command -v kcat >/dev/null || need+=(kcat)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
((${#need[@]})) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "the tests need ${need[*]}: install them (Debian/Ubuntu: sudo apt-get install --no-install-recommends ${need[*]}) or run $0 as root" >&2
  exit 1
fi

echo "installing ${need[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
if [[ " ${need[*]} " == *" prometheus "* ]]; then
  # Debian's package starts its services; the tests run their own Prometheus on other ports.
  for service in prometheus prometheus-node-exporter; do
    systemctl stop "$service" >/dev/null 2>&1 || service "$service" stop >/dev/null 2>&1 || true
  done
fi
