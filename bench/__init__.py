"""Throughput benchmark: the raw aiokafka loop, one worker and two workers over the same backlog,
then the worker's decision latency at half its throughput. `python -m bench`; see README.md."""
