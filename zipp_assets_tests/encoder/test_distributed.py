"""The data-parallel launcher's wait for its ranks: a rank whose teardown hangs after its work is done
is killed after the grace period, and a rank that fails is reported as `mp.spawn` reports it."""

import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from zipp_assets.encoder.distributed import join_ranks, mark_finished


def _finish_then_hang_on_rank_one(rank: int, out_dir: str) -> None:
    mark_finished(Path(out_dir), rank)
    if rank == 1:
        time.sleep(3600)  # what a hung destroy_process_group looks like from outside


def _fail_on_rank_one(rank: int, out_dir: str) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 broke before finishing")
    mark_finished(Path(out_dir), rank)
    time.sleep(3600)  # rank 0 waits, as it would in a collective with the failed rank


def _hang_before_finishing(rank: int, out_dir: str) -> None:
    time.sleep(3600)  # a rank stuck in a collective


def _finish(rank: int, out_dir: str) -> None:
    mark_finished(Path(out_dir), rank)


def _start(fn, tmp_path):
    return mp.start_processes(fn, args=(str(tmp_path),), nprocs=2, join=False, start_method="spawn")


@pytest.mark.timeout(120)
def test_a_rank_hung_in_teardown_after_finishing_is_killed_after_the_grace_period(tmp_path):
    context = _start(_finish_then_hang_on_rank_one, tmp_path)
    started = time.monotonic()
    # 10 s: long enough for rank 0 to exit on a busy machine, far shorter than the hang
    killed = join_ranks(context, tmp_path, world_size=2, grace_seconds=10.0, poll_seconds=0.2)
    assert killed == [context.processes[1].pid]
    assert not any(p.is_alive() for p in context.processes)
    assert context.processes[0].exitcode == 0
    assert time.monotonic() - started < 60


@pytest.mark.timeout(120)
def test_a_rank_that_fails_is_raised_and_the_others_stopped(tmp_path):
    context = _start(_fail_on_rank_one, tmp_path)
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 broke before finishing"):
        join_ranks(context, tmp_path, world_size=2, grace_seconds=1.0, poll_seconds=0.2)
    assert not any(p.is_alive() for p in context.processes)


@pytest.mark.timeout(120)
def test_ranks_that_exit_are_joined_and_none_killed(tmp_path):
    context = _start(_finish, tmp_path)
    # A generous grace: exiting after the work (the interpreter's teardown) takes a while on a busy machine.
    assert join_ranks(context, tmp_path, world_size=2, grace_seconds=60.0, poll_seconds=0.2) == []
    assert [p.exitcode for p in context.processes] == [0, 0]


@pytest.mark.timeout(120)
def test_an_interrupted_wait_leaves_no_rank_running(tmp_path):
    import signal

    def interrupt(_signum, _frame):
        raise TimeoutError("the caller gave up")

    context = _start(_hang_before_finishing, tmp_path)
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(3)
    try:
        with pytest.raises(TimeoutError):
            join_ranks(context, tmp_path, world_size=2, grace_seconds=1.0, poll_seconds=0.2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not any(p.is_alive() for p in context.processes)


def _fail_on_rank_one_while_rank_zero_ignores_sigterm(rank: int, out_dir: str) -> None:
    import signal

    if rank == 1:
        time.sleep(2)  # rank 0 is set up by then
        raise RuntimeError("rank 1 broke before finishing")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a rank stuck in native code may not die of SIGTERM
    time.sleep(3600)


@pytest.mark.timeout(120)
def test_a_failed_rank_stops_a_rank_that_does_not_die_of_sigterm(tmp_path):
    context = _start(_fail_on_rank_one_while_rank_zero_ignores_sigterm, tmp_path)
    started = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 broke before finishing"):
        join_ranks(context, tmp_path, world_size=2, grace_seconds=1.0, poll_seconds=0.2)
    assert not any(p.is_alive() for p in context.processes) and time.monotonic() - started < 60
