"""Measurements beside training (probes/beside.py): an epoch's decompositions run on the measuring thread while the
next epoch trains, and the epoch tables come out as they did when training waited for them: every epoch's row, in
order, with the same values."""

from __future__ import annotations

import threading

import pytest

from rankprune.probes.beside import EpochRows, Later, set_beside
from rankprune.runfolder import EPOCHS, ITERATIONS


def _strip(rows: list[dict]) -> list[dict]:
    drop = {"seconds", "cumulative_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.mark.parametrize("rank_source", ["activations", "weights"])
def test_a_run_measured_beside_training_writes_the_tables_of_a_run_that_waited(tmp_path, tiny_config, run_controller,
                                                                             rank_source):
    cfg = tiny_config(probes={"movement": True}, rank={"source": rank_source}, evolve={"layers": (2,)})
    beside = run_controller(cfg, tmp_path / "beside")
    previous = set_beside(False)
    try:
        waited = run_controller(cfg, tmp_path / "waited")
    finally:
        set_beside(previous)
    assert len(beside.rows(EPOCHS)) > 3
    assert _strip(beside.rows(EPOCHS)) == _strip(waited.rows(EPOCHS))  # every epoch, in order, the same values
    assert _strip(beside.rows(ITERATIONS)) == _strip(waited.rows(ITERATIONS))


def test_later_parts_run_on_the_measuring_thread_in_order_and_their_errors_reach_the_trainer():
    written, threads = [], []

    def later(i: int) -> Later:
        def measure() -> dict:
            threads.append(threading.current_thread().name)
            return {"measured": i}
        return Later(measure)

    rows = EpochRows(written.append)
    for epoch in range(1, 6):
        rows.submit({"epoch": epoch}, [later(epoch)])
    rows.submit({"epoch": 6}, [])  # an epoch with nothing to measure later waits for the one before it
    rows.flush()
    assert written == [{"epoch": i, "measured": i} for i in range(1, 6)] + [{"epoch": 6}]
    assert set(threads) == {"rankprune-measure_0"}

    def broken() -> dict:
        raise ValueError("the SVD did not converge")

    rows.submit({"epoch": 7}, [Later(broken)])
    with pytest.raises(ValueError, match="did not converge"):
        rows.flush()
    previous = set_beside(False)  # the old path: measured at once, on the training thread
    try:
        threads.clear()
        rows.submit({"epoch": 8}, [later(8)])
        assert written[-1] == {"epoch": 8, "measured": 8} and threads == [threading.current_thread().name]
    finally:
        set_beside(previous)
