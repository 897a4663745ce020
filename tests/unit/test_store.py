"""PartitionState over both backends: pending writes in memory until their transaction commits,
then durable with the changelog offsets they reflect; restore, wipe, forget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.engine.store import Backend, MemoryBackend, PartitionState, RocksBackend
from streams.step import CHARGES, SEEN, TASKS

Opener = Callable[[], Backend]


@pytest.fixture(params=["memory", "rocksdb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "memory":
        return MemoryBackend
    return lambda: RocksBackend(tmp_path / "state" / "p0")


def test_reads_see_pending_writes_and_discard_drops_them(opener: Opener) -> None:
    st = PartitionState(opener)
    assert st.get(TASKS, "t1") is None and not st.dirty
    st.put(TASKS, "t1", {"status": "matched"})
    st.put(SEEN, "orders/e1", 5)
    assert st.get(TASKS, "t1") == {"status": "matched"} and st.get(SEEN, "orders/e1") == 5
    assert st.get(CHARGES, "t1") is None  # stores are separate maps
    assert st.dirty
    st.discard()
    assert st.get(TASKS, "t1") is None and st.get(SEEN, "orders/e1") is None and not st.dirty
    assert list(st.items(TASKS)) == []
    st.close()


def test_pending_yields_one_record_per_key_however_often_written(opener: Opener) -> None:
    st = PartitionState(opener)
    for i in range(5):
        st.put(CHARGES, "ord-1", {"reversed_fen": i})
    st.put(CHARGES, "ord-2", {"reversed_fen": 0})
    st.put(SEEN, "orders/e1", 1)
    st.put(SEEN, "orders/e1", 2)
    pending = sorted(st.pending())
    assert pending == [
        (CHARGES, "ord-1", orjson.dumps({"reversed_fen": 4})),
        (CHARGES, "ord-2", orjson.dumps({"reversed_fen": 0})),
        (SEEN, "orders/e1", b"2"),
    ]
    st.close()


def test_commit_makes_writes_durable_with_their_checkpoints(opener: Opener) -> None:
    st = PartitionState(opener)
    st.put(TASKS, "t1", {"status": "matched"})
    st.put(SEEN, "xingtu-tasks/e1", 1_700_000_000_000)
    encoded = st.seal()
    assert st.checkpoint(TASKS) is None
    st.commit(encoded, {TASKS: 41, SEEN: 7})
    assert not st.dirty and list(st.pending()) == []
    assert st.get(TASKS, "t1") == {"status": "matched"}
    assert (st.checkpoint(TASKS), st.checkpoint(SEEN), st.checkpoint(CHARGES)) == (41, 7, None)
    st.close()
    again = PartitionState(opener)  # reopened: memory is a new empty map, RocksDB reads back
    if isinstance(again.backend, RocksBackend):
        assert again.get(TASKS, "t1") == {"status": "matched"}
        assert dict(again.items(SEEN)) == {"xingtu-tasks/e1": 1_700_000_000_000}
        assert (again.checkpoint(TASKS), again.checkpoint(SEEN)) == (41, 7)
    else:
        assert again.get(TASKS, "t1") is None and again.checkpoint(TASKS) is None
    again.close()


def test_rocksdb_reopened_after_commit_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "p3"
    st = PartitionState(lambda: RocksBackend(path))
    st.put(CHARGES, "ord-1", {"fee_fen": 3980})
    st.put(CHARGES, "ord-2", {"fee_fen": 1})
    st.commit(st.seal(), {CHARGES: 12})
    st.put(CHARGES, "ord-3", {"fee_fen": 2})  # never committed: not durable
    st.close()
    st = PartitionState(lambda: RocksBackend(path))
    assert dict(st.items(CHARGES)) == {"ord-1": {"fee_fen": 3980}, "ord-2": {"fee_fen": 1}}
    assert st.checkpoint(CHARGES) == 12
    st.close()


def test_restore_applies_records_and_tombstones_up_to_last(opener: Opener) -> None:
    st = PartitionState(opener)
    st.restore(TASKS, [(b"t1", b'{"a":1}'), (b"t2", b'{"a":2}'), (b"t1", b'{"a":3}')], 2)
    assert dict(st.items(TASKS)) == {"t1": {"a": 3}, "t2": {"a": 2}}
    st.restore(TASKS, [(b"t2", None), (b"t3", b"[]")], 4)
    assert dict(st.items(TASKS)) == {"t1": {"a": 3}, "t3": []}
    assert st.get(TASKS, "t2") is None and st.checkpoint(TASKS) == 4
    assert list(st.items(CHARGES)) == [] and st.checkpoint(CHARGES) is None
    st.close()


def test_items_lists_one_store_only(opener: Opener) -> None:
    st = PartitionState(opener)
    st.put(TASKS, "x", 1)
    st.put(SEEN, "x", 2)
    st.put(SEEN, "y|z", 3)
    st.commit(st.seal(), {SEEN: 0})
    assert dict(st.items(TASKS)) == {"x": 1}
    assert dict(st.items(SEEN)) == {"x": 2, "y|z": 3}
    st.close()


def test_forget_drops_keys_from_the_local_store(opener: Opener) -> None:
    st = PartitionState(opener)
    for k in ("a", "b", "c"):
        st.put(SEEN, k, 1)
    st.commit(st.seal(), {SEEN: 2})
    st.forget(SEEN, iter(["a", "c", "never-there"]))
    assert dict(st.items(SEEN)) == {"b": 1} and st.checkpoint(SEEN) == 2
    st.close()


def test_wipe_empties_and_reopens(opener: Opener) -> None:
    st = PartitionState(opener)
    st.put(TASKS, "t1", 1)
    st.commit(st.seal(), {TASKS: 9})
    st.put(TASKS, "t2", 2)
    st.wipe()
    assert st.get(TASKS, "t1") is None and st.get(TASKS, "t2") is None
    assert st.checkpoint(TASKS) is None and not st.dirty
    st.put(TASKS, "t3", 3)  # the reopened store takes writes again
    st.commit(st.seal(), {TASKS: 0})
    assert dict(st.items(TASKS)) == {"t3": 3}
    st.close()


def test_a_mirrored_store_answers_from_memory_and_follows_commits_forgets_and_restores(
    opener: Opener,
) -> None:
    st = PartitionState(opener, mirrored=(SEEN,))
    st.put(SEEN, "orders/e1", 5)
    st.commit(st.seal(), {SEEN: 0})
    st.load_mirrors()
    st.backend.write([(b"seen|orders/e1", None)])  # behind the mirror's back: not read again
    assert st.get(SEEN, "orders/e1") == 5
    st.put(SEEN, "orders/e2", 6)
    st.commit(st.seal(), {SEEN: 1})
    assert st.get(SEEN, "orders/e2") == 6  # committed writes reach the mirror
    st.forget(SEEN, ["orders/e2"])
    assert st.get(SEEN, "orders/e2") is None
    st.restore(SEEN, [(b"orders/e3", b"7")], last=2)
    assert st.get(SEEN, "orders/e3") == 7  # a restore drops the mirror: reads go to the store
    st.load_mirrors()
    assert st.get(SEEN, "orders/e3") == 7 and st.get(SEEN, "orders/e1") is None
    st.close()


def test_a_cached_store_keeps_committed_values_and_absences_bounded_and_follows_changes(
    opener: Opener,
) -> None:
    st = PartitionState(opener, cached=(TASKS,), cache_entries=4)
    st.put(TASKS, "t1", {"v": 1})
    st.commit(st.seal(), {TASKS: 0})
    assert st.get(TASKS, "nope") is None
    st.backend.write([(b"tasks|t1", None), (b"tasks|nope", b"9")])  # behind the cache's back
    assert st.get(TASKS, "t1") == {"v": 1} and st.get(TASKS, "nope") is None  # both remembered
    st.put(TASKS, "t1", None)
    st.discard()  # an aborted write never reaches the cache
    assert st.get(TASKS, "t1") == {"v": 1}
    st.put(TASKS, "t1", {"v": 2})
    st.commit(st.seal(), {TASKS: 1})
    assert st.get(TASKS, "t1") == {"v": 2}  # a committed write replaces the cached value
    for i in range(3):
        st.get(TASKS, f"other{i}")  # the fifth entry pushes the oldest half out
    assert st.get(TASKS, "nope") == 9  # forgotten, so read from the store again
    st.forget(TASKS, ["nope"])
    assert st.get(TASKS, "nope") is None
    st.restore(TASKS, [(b"t1", b"3")], last=2)
    assert st.get(TASKS, "t1") == 3  # a restore drops the cache
    st.wipe()
    assert st.get(TASKS, "t1") is None
    st.close()


def test_writes_after_a_seal_belong_to_the_next_transaction(opener: Opener) -> None:
    """Pipelined commits: the sealed writes are read under the new ones, committed alone, and
    a failure forgets both."""
    st = PartitionState(opener)
    st.put(TASKS, "t1", {"v": 1})
    st.put(CHARGES, "c1", {"v": 1})
    sealed = st.seal()
    assert sealed == [(TASKS, "t1", b'{"v":1}'), (CHARGES, "c1", b'{"v":1}')]
    assert not st.dirty and st.get(TASKS, "t1") == {"v": 1}  # still read while committing
    st.put(TASKS, "t1", {"v": 2})
    assert st.get(TASKS, "t1") == {"v": 2} and st.get(CHARGES, "c1") == {"v": 1}
    with pytest.raises(RuntimeError):
        st.seal()  # one sealed transaction at a time
    st.commit(sealed, {TASKS: 0, CHARGES: 0})
    assert st.dirty and list(st.pending()) == [(TASKS, "t1", b'{"v":2}')]
    assert st.get(TASKS, "t1") == {"v": 2} and st.get(CHARGES, "c1") == {"v": 1}
    second = st.seal()
    st.put(CHARGES, "c1", {"v": 3})
    st.discard()  # the sealed transaction failed: both layers go
    assert st.get(TASKS, "t1") == {"v": 1} and st.get(CHARGES, "c1") == {"v": 1}
    assert second and not st.dirty
    st.close()
