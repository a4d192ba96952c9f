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


def _finish(rank: int, out_dir: str) -> None:
    mark_finished(Path(out_dir), rank)


def _start(fn, tmp_path):
    return mp.start_processes(fn, args=(str(tmp_path),), nprocs=2, join=False, start_method="spawn")


@pytest.mark.timeout(120)
def test_a_rank_hung_in_teardown_after_finishing_is_killed_after_the_grace_period(tmp_path):
    context = _start(_finish_then_hang_on_rank_one, tmp_path)
    started = time.monotonic()
    killed = join_ranks(context, tmp_path, world_size=2, grace_seconds=1.0, poll_seconds=0.2)
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
    assert join_ranks(context, tmp_path, world_size=2, grace_seconds=1.0, poll_seconds=0.2) == []
    assert [p.exitcode for p in context.processes] == [0, 0]
