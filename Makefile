# live-commerce-streams: the two commands of the quick start are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KAFKA  := deploy/local-kafka/kafka.sh
KAFKA_PORT ?= 9092
export KAFKA_PORT
STAMP  := $(VENV)/.installed

help:
	@echo "make run         local Kafka + worker + demo producer (Ctrl-C stops them)"
	@echo "make test        unit and integration tests against a real local Kafka"
	@echo "make kafka       start the local Kafka alone; make kafka-stop stops it"
	@echo "make bench       throughput benchmark (baseline aiokafka vs the worker)"
	@echo "make lint        ruff and mypy"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

kafka:
	@$(KAFKA) start

kafka-stop:
	@$(KAFKA) stop

run: $(STAMP)
	@bash deploy/run-local.sh

test: $(STAMP)
	@bash tests/run.sh

bench: $(STAMP)
	@$(KAFKA) start
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy streams bench

.PHONY: help install kafka kafka-stop run test bench lint
