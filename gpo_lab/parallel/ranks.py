"""The ranks of one run: who owns the run's files, how values are gathered, how a failure reaches rank 0.

A run of W processes is still one run in one directory. Global rank 0 owns the lock, the
config, ``summary.json`` and ``metrics.jsonl``; the other ranks only train. The rank is known
before Lightning starts from the launcher's environment: Lightning's own launcher re-runs the
command for local ranks >= 1 with ``LOCAL_RANK`` set, srun sets ``SLURM_PROCID``, torchrun
``RANK``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel

from gpo_lab.store.records import atomic_write_text

log = logging.getLogger(__name__)

FAILURES_DIR = "rank-failures"  # one JSON file per rank that failed, read by rank 0 for summary.json
PEER_WAIT_S = 3.0  # how long rank 0, failing by a broken connection, waits for the failed peer's message
ACK_WAIT_S = 15.0  # how long a failed rank waits for rank 0 to record its failure before it exits


def launched_as_rank_zero() -> bool:
    """Whether this process is global rank 0 as its launcher set it (also when it is the only one)."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ and _started_together(name):
            return int(os.environ[name]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def launched_rank() -> int:
    """This process's global rank as far as its launcher's environment tells (for messages, before Lightning)."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ and _started_together(name):
            return int(os.environ[name])
    return int(os.environ.get("LOCAL_RANK", 0))


def _started_together(name: str) -> bool:
    """Whether ``name`` is a rank of several processes that a launcher started at once (srun, torchrun)."""
    if name == "SLURM_PROCID":
        return int(os.environ.get("SLURM_NTASKS", 1)) > 1
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def started_together() -> bool:
    """Whether all ranks start at once (srun, torchrun): the others must then wait for rank 0's decision.

    Under Lightning's own launcher, rank 0 starts the others only once it has decided to train.
    """
    return _started_together("RANK") and "RANK" in os.environ or _started_together("SLURM_PROCID")


def launch_token() -> str:
    """A name for this start of the job, the same on all its ranks and new at every requeue or rerun."""
    if "TORCHELASTIC_RESTART_COUNT" in os.environ:  # torchrun (also inside a SLURM allocation)
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id == "none":  # torchrun without a rendezvous id: its agent, the parent of this node's ranks
            run_id = f"agent{os.getppid()}"
        return f"torchrun-{run_id}-{os.environ['TORCHELASTIC_RESTART_COUNT']}"
    return f"slurm-{os.environ.get('SLURM_JOB_ID', 'none')}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def decision_path(run_dir: Path) -> Path:
    return Path(run_dir) / f".start-{launch_token()}.json"


def announce_decision(run_dir: Path, train: bool) -> None:
    """Rank 0 tells the ranks that started with it whether this run trains (or was skipped).

    The decisions of earlier starts (other job ids, earlier requeues) are removed.
    """
    path = decision_path(run_dir)
    for old in Path(run_dir).glob(".start-*.json"):
        if old != path:
            old.unlink(missing_ok=True)
    atomic_write_text(path, json.dumps({"train": train}))


def await_decision(run_dir: Path, timeout_s: float = 600.0) -> bool:
    """A rank > 0 waits for rank 0's decision (it writes ``summary.json`` and ``config.yaml`` first)."""
    path, started = decision_path(run_dir), time.time()
    while not path.exists():
        if time.time() - started > timeout_s:
            raise TimeoutError(f"Rank 0 did not start the run in {run_dir} within {timeout_s:.0f} s; see its log.")
        time.sleep(0.2)
    return bool(json.loads(path.read_text())["train"])


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``values`` (first dimension may differ between ranks), concatenated in rank order.

    Ranks hold contiguous shards of a batch or an evaluation set, so the result is the rows of
    one process in its order, with nothing counted twice. Every rank must call it (a collective).
    """
    rank, size = world()
    if size == 1:
        return values
    count = torch.tensor([values.shape[0]], dtype=torch.long, device=values.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = values.new_zeros((longest, *values.shape[1:]))
    padded[: values.shape[0]] = values
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts)])


def gather_objects(item) -> list:
    """Every rank's ``item`` (any picklable value), in rank order; a collective, on any backend."""
    _, size = world()
    if size == 1:
        return [item]
    items: list = [None] * size
    dist.all_gather_object(items, item)
    return items


def shard_bounds(count: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous share ``[lo, hi)`` of ``count`` items that ``rank`` of ``size`` takes (sizes differ by <= 1)."""
    return count * rank // size, count * (rank + 1) // size


# ----------------------------------------------------------------------------------- failures
def record_failure(run_dir: Path, rank: int, message: str) -> None:
    """A rank > 0 leaves its error for rank 0, which records it in ``summary.json``."""
    directory = Path(run_dir) / FAILURES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / f"rank-{rank}.json", json.dumps({"rank": rank, "error": message}))


def peer_failure(run_dir: Path, wait_s: float = PEER_WAIT_S) -> dict | None:
    """The error another rank left (waiting up to ``wait_s`` for one), or None."""
    directory, started = Path(run_dir) / FAILURES_DIR, time.time()
    while True:
        found = sorted(directory.glob("rank-*.json")) if directory.is_dir() else []
        if found:
            return json.loads(found[0].read_text())
        if time.time() - started >= wait_s:
            return None
        time.sleep(0.1)


def clear_failures(run_dir: Path) -> None:
    """Forget the errors of an earlier attempt (rank 0, at the start of a run)."""
    directory = Path(run_dir) / FAILURES_DIR
    for path in directory.glob("rank-*.json") if directory.is_dir() else []:
        path.unlink(missing_ok=True)


def leave_after_failure(run_dir: Path, status_of, wait_s: float = ACK_WAIT_S) -> None:
    """A failed rank > 0 breaks the process group (so rank 0's next collective fails at once rather
    than at a timeout) and waits until rank 0 has recorded the failure before it exits: under
    Lightning's launcher, a child that exits with an error has the main process killed."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as error:  # the group may be broken already; the wait below still matters
            log.debug("destroy_process_group: %s", error)
    started = time.time()
    while time.time() - started < wait_s and status_of(run_dir) == "running":
        time.sleep(0.2)


def is_communication_error(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank went away."""
    text = f"{type(error).__name__}: {error}".lower()
    return any(word in text for word in ("gloo", "connection closed", "connection reset", "nccl", "distbackend"))


def full_parameters(trainer) -> AbstractContextManager:
    """Whole parameters for work outside the training step (sampling), where FSDP keeps them sharded.

    Every rank must enter it at the same point (it gathers the shards); other strategies need nothing.
    """

    model = getattr(getattr(trainer, "strategy", None), "model", None)
    if isinstance(model, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(model, writeback=False)
    return nullcontext()


def sampling_ranks(trainer) -> tuple[int, int]:
    """(rank, world size) of the ranks that share work outside the training step, such as sampling.

    All ranks, unless FSDP units nest inside the model: the forward of a nested unit is a
    collective, which ranks with different shares would call different numbers of times. Then
    each rank does the whole work alone, ``(0, 1)``, with the same result.
    """

    model = getattr(getattr(trainer, "strategy", None), "model", None)
    if model is not None and sum(isinstance(m, FullyShardedDataParallel) for m in model.modules()) > 1:
        return 0, 1
    return world()
