"""The Faust-facing layer: everything that touches Faust lives in this folder.

Kept from Faust: the App and `faust -A streams worker` (CLI, web server, supervision), the
consumer group with its co-partitioned assignment and rebalance callbacks.
Replaced: per-record delivery (by whole batches, `consumer.BatchConsumer`), tables and their
recovery, transactions and offset commits (by `streams.engine`). docs/architecture.md has the
table of what replaced what, why, and which test shows it.
"""
