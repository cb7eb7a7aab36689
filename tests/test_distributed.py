"""Runs of two processes (DDP and FSDP over gloo on CPU): one run directory, and the numbers of one process.

The reference of every comparison is an independent run: one process with the global batch
(``data.batch_size`` = 2 x the per-rank batch). Measured on 2 CPU cores: the smoke run's final
``val/*`` agree to about 9e-7 relative (DDP, 12 steps, the last a short batch), FSDP and DDP
exactly; LoRA under FSDP to about 9e-7; the synthetic run's, KL and win rate included, to about
4e-6 (DDP and FSDP; the largest on R_mu ~ 0.04, an absolute difference of 1e-7).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gpo_lab.data.length_grouping import LengthGroupedOrder
from gpo_lab.data.resumable import SeededBatchSampler
from gpo_lab.parallel.ranks import shard_bounds
from tests.helpers.cli import wait_for
from tests.helpers.distributed import records, relative_differences, run_in, summary, tail

SMOKE = ["+experiment=smoke"]
# The smoke task's 112 training pairs in global batches of 10: step 11 trains on the short last
# batch (2 pairs, one per rank), and step 12 would start the second epoch's order.
STEPS = 12
SHARED = [*SMOKE, f"trainer.max_steps={STEPS}"]
PER_RANK, GLOBAL = "data.batch_size=5", "data.batch_size=10"
TOLERANCE = 1e-5  # relative, with a floor of 1e-3 under the denominator


# ----------------------------------------------------------------------------------- the data order
@pytest.mark.parametrize("num_items, world_size, batch_size", [(112, 2, 4), (23, 2, 4), (22, 3, 2), (9, 4, 2)])
def test_rank_shares_of_a_step_are_the_batch_of_one_process(num_items, world_size, batch_size):
    """Together the W ranks' batches of step k are one process's batch k of W x b pairs, each pair once."""
    lengths = [(7 * i) % 13 for i in range(num_items)]
    for epoch in range(2):
        one = SeededBatchSampler(num_items, world_size * batch_size, seed=3)
        one.order = LengthGroupedOrder(lengths, world_size * batch_size, seed=3, group_batches=2)
        expected = [b for b in one.batches(epoch) if len(b) >= world_size]  # a batch smaller than W is left out
        ranks = []
        for rank in range(world_size):
            sampler = SeededBatchSampler(num_items, batch_size, 3, rank=rank, world_size=world_size)
            sampler.order = LengthGroupedOrder(lengths, world_size * batch_size, seed=3, group_batches=2)
            ranks.append(sampler.batches(epoch))
            assert len(sampler) == len(expected)
        for step, batch in enumerate(expected):
            shares = [ranks[r][step] for r in range(world_size)]
            assert [i for share in shares for i in share] == batch
            assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1


def test_rank_shares_resume_mid_epoch():
    sampler = SeededBatchSampler(40, 4, seed=1, rank=1, world_size=2)
    first = list(iter(sampler))
    resumed = SeededBatchSampler(40, 4, seed=1, rank=1, world_size=2)
    resumed.load_state_dict({"epoch": 0, "position": 2, "seed": 1, "num_items": 40})
    assert list(iter(resumed)) == first[2:]


def test_shards_cover_every_item_once():
    for count in range(0, 12):
        for size in (1, 2, 3, 5):
            items = [i for rank in range(size) for i in range(*shard_bounds(count, rank, size))]
            assert items == list(range(count))


@pytest.mark.parametrize(
    "env, rank_zero, together",
    [
        ({}, True, False),  # one process, or rank 0 before Lightning starts the others
        ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, False, False),  # Lightning's child
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "LOCAL_RANK": "1"}, False, False),  # one task, Lightning's child
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, False, True),  # srun's second task
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, True, True),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, False, True),  # torchrun
    ],
)
def test_the_launcher_environment_names_rank_zero(monkeypatch, env, rank_zero, together):
    from gpo_lab.parallel.ranks import launched_as_rank_zero, started_together

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert (launched_as_rank_zero(), started_together()) == (rank_zero, together)


def test_ranks_started_together_read_rank_zeros_decision_of_this_start_only(tmp_path, monkeypatch):
    from gpo_lab.parallel.ranks import announce_decision, await_decision

    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    announce_decision(tmp_path, train=False)
    assert await_decision(tmp_path, timeout_s=1) is False
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued: the first start's decision does not count
    with pytest.raises(TimeoutError, match="Rank 0 did not start the run"):
        await_decision(tmp_path, timeout_s=0.5)
    announce_decision(tmp_path, train=True)
    assert await_decision(tmp_path, timeout_s=1) is True
    assert [p.name for p in tmp_path.glob(".start-*.json")] == [".start-slurm-7-1.json"]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun inside the allocation: its own starts
    with pytest.raises(TimeoutError):
        await_decision(tmp_path, timeout_s=0.5)


def _gather_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from gpo_lab.parallel.ranks import gather_objects, gather_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = torch.arange(3 * (rank + 1), dtype=torch.float64).reshape(-1, 3) + 100 * rank  # 1 row, then 2 rows
    empty = torch.zeros((0, 3))
    gathered = (
        gather_rows(rows),
        gather_rows(empty if rank == 0 else torch.ones(2, 3)),
        gather_objects({"rank": rank, "ids": [[rank] * (rank + 1)]}),
    )
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_rows_concatenates_uneven_shares_in_rank_order(tmp_path):
    port = 29_000 + os.getpid() % 1000
    mp.spawn(_gather_worker, args=(port, str(tmp_path / "out.pt")), nprocs=2)
    uneven, with_empty, objects = torch.load(tmp_path / "out.pt")
    expected = torch.cat([torch.arange(3.0).reshape(1, 3), torch.arange(6.0).reshape(2, 3) + 100]).double()
    assert torch.equal(uneven, expected)
    assert torch.equal(with_empty, torch.ones(2, 3))
    assert objects == [{"rank": 0, "ids": [[0]]}, {"rank": 1, "ids": [[1, 1]]}]


def test_ranks_share_sampling_unless_fsdp_units_nest_inside_the_model(tmp_path, monkeypatch):
    """The forward of a nested FSDP unit is a collective: ranks that sample different shares would hang."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from gpo_lab.parallel import ranks as distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(distributed, "world", lambda: (1, 2))  # as rank 1 of 2 would see it
        cpu = torch.device("cpu")
        flat = FSDP(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)), device_id=cpu)
        nested = FSDP(
            torch.nn.Sequential(FSDP(torch.nn.Linear(2, 2), device_id=cpu), torch.nn.Linear(2, 2)), device_id=cpu
        )
        for model, ranks in ((None, (1, 2)), (torch.nn.Linear(2, 2), (1, 2)), (flat, (1, 2)), (nested, (0, 1))):
            trainer = type("Trainer", (), {"strategy": type("Strategy", (), {"model": model})()})()
            assert distributed.sampling_ranks(trainer) == ranks
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """The smoke run on 2 DDP ranks of 5 pairs, 2 FSDP ranks of 5, and 1 process of 10."""
    root = tmp_path_factory.mktemp("distributed")
    runs = {
        "ddp": (root / "ddp", [*SHARED, "trainer=cpu_ddp", PER_RANK]),
        "fsdp": (root / "fsdp", [*SHARED, "trainer=cpu_fsdp", PER_RANK]),
        "one": (root / "one", [*SHARED, GLOBAL]),
    }
    for name, (run_dir, overrides) in runs.items():
        started = time.time()
        fresh = {"GPO_LAB_CACHE": str(root / "cache")} if name == "ddp" else None  # its caches built here
        result = run_in(run_dir, overrides, env=fresh)
        assert result.returncode == 0, f"{name}: {tail(result)}"
        print(f"{name}: {time.time() - started:.1f} s")
    return {name: run_dir for name, (run_dir, _) in runs.items()}


@pytest.mark.slow
def test_two_ddp_ranks_match_one_process_with_twice_the_batch(smoke_runs):
    ddp, one = summary(smoke_runs["ddp"]), summary(smoke_runs["one"])
    assert ddp["status"] == one["status"] == "completed" and ddp["steps"] == one["steps"] == STEPS
    assert set(ddp["final"]) == set(one["final"]) and "val/loss" in one["final"]
    differences = relative_differences(ddp["final"], one["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences
    trained = {r["step"]: r for r in records(smoke_runs["one"]) if "train/loss" in r}
    for record in (r for r in records(smoke_runs["ddp"]) if "train/loss" in r):  # every step's global batch
        assert record["train/loss"] == pytest.approx(trained[record["step"]]["train/loss"], rel=TOLERANCE)


@pytest.mark.slow
def test_two_ranks_write_one_run(smoke_runs):
    run_dir = smoke_runs["ddp"]
    split_size = {"train": 112, "validation": 16}
    steps = [r["step"] for r in records(run_dir) if "train/loss" in r]
    assert steps == list(range(STEPS))  # each step once, from rank 0 alone
    assert [r["step"] for r in records(run_dir) if "val/loss" in r] == [5, 10, STEPS]
    rank_1 = (run_dir / "train_ddp_process_1.log").read_text()  # rank 1 ran in this directory
    rank_0 = (run_dir / "gpo_lab.log").read_text()
    for split in ("train", "validation"):  # the reference cache: computed once by rank 0, read by rank 1
        assert f"Reference log-probs of {split_size[split]} {split} pairs: computed" in rank_0
        assert f"Reference log-probs of {split_size[split]} {split} pairs: cached" in rank_1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert list(run_dir.rglob("summary.json")) == [run_dir / "summary.json"]
    hydra_record = run_dir / ".hydra" / "config.yaml"  # rank 0's; rank 1 runs with hydra.output_subdir=null
    assert sorted(run_dir.rglob("config.yaml")) == sorted([run_dir / "config.yaml", hydra_record])
    assert not list(run_dir.glob("rank-failures/*"))


@pytest.mark.slow
def test_fsdp_matches_ddp_and_writes_a_whole_checkpoint(smoke_runs):
    fsdp, ddp = summary(smoke_runs["fsdp"]), summary(smoke_runs["ddp"])
    assert fsdp["status"] == "completed"
    differences = relative_differences(fsdp["final"], ddp["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences
    whole = torch.load(smoke_runs["fsdp"] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    replicated = torch.load(smoke_runs["ddp"] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert whole.keys() == replicated.keys()  # the single-process names and shapes: loadable without FSDP
    for name, tensor in replicated.items():
        assert whole[name].shape == tensor.shape
        torch.testing.assert_close(whole[name], tensor, rtol=1e-4, atol=1e-6)


def sampled(run_dir: Path) -> list[tuple[str, str]]:
    """(prompts, ranks) of each validation sample bank that rank 0 drew, from its log."""
    pattern = r"sampled (\d+) val policy responses in [\d.]+ s(?: \(shared by (\d+) ranks\))?"
    return re.findall(pattern, (run_dir / "gpo_lab.log").read_text())


SYNTHETIC_BUDGET = [
    "synthetic.sft.steps=30",
    "synthetic.pairs.num_train_prompts=128",
    "synthetic.pairs.num_eval_prompts=32",
    "callbacks.sample_bank.num_prompts=32",
    "callbacks.sample_bank.progress=false",
    "trainer.gradient_clip_val=null",  # Lightning's FSDP has no norm clipping
]


@pytest.mark.slow
def test_synthetic_kl_and_win_rate_on_two_ranks_match_one_process(tmp_path):
    budget = ["+experiment=synthetic", *SYNTHETIC_BUDGET, "trainer.max_steps=4", "trainer.val_check_interval=2"]
    one = run_in(tmp_path / "one", [*budget, "data.batch_size=8"])
    assert one.returncode == 0, tail(one)
    expected = summary(tmp_path / "one")["final"]
    assert {"val/kl_seq", "val/kl_token", "val/win_rate", "val/offline_reg"} <= expected.keys()
    for trainer in ("cpu_ddp", "cpu_fsdp"):  # FSDP samples with its parameters gathered on every rank
        two = run_in(tmp_path / trainer, [*budget, f"trainer={trainer}", "data.batch_size=4"])
        assert two.returncode == 0, tail(two)
        differences = relative_differences(summary(tmp_path / trainer)["final"], expected)
        print(f"{trainer}: max relative difference {max(differences.values()):.2e}")
        assert max(differences.values()) < TOLERANCE, (trainer, differences)
        # Each rank drew half of the bank, and the whole bank equals one process's.
        banks = sampled(tmp_path / "one")
        assert banks and sampled(tmp_path / trainer) == [(n, "2") for n, _ in banks]


@pytest.mark.slow
def test_online_pairs_on_two_ranks_match_one_process_when_a_rank_keeps_no_pair(tmp_path):
    """One prompt per rank: a step where a rank's only pair is dropped (identical responses) scores a
    placeholder at weight zero, so no rank waits for another in the step's collectives (they hung before)."""
    budget = ["+experiment=synthetic_online", *SYNTHETIC_BUDGET, "trainer.max_steps=12", "trainer.val_check_interval=6"]
    one = run_in(tmp_path / "one", [*budget, "data.batch_size=2"])
    assert one.returncode == 0, tail(one)
    expected = summary(tmp_path / "one")
    kept = expected["data"]["online_pairs"]
    assert 0 < kept < 24  # some of the 24 drawn pairs were dropped: some steps left a rank without one
    for trainer in ("cpu_ddp", "cpu_fsdp"):
        two = run_in(tmp_path / trainer, [*budget, f"trainer={trainer}", "data.batch_size=1"], timeout=240)
        assert two.returncode == 0, tail(two)
        result = summary(tmp_path / trainer)
        assert result["data"]["online_pairs"] == kept  # counted over both ranks
        differences = relative_differences(result["final"], expected["final"])
        assert max(differences.values()) < TOLERANCE, (trainer, differences)


@pytest.mark.slow
def test_lora_under_fsdp_matches_one_process(tmp_path):
    lora = [*SMOKE, "model=tiny_lora", "reference=adapters_disabled"]
    one = run_in(tmp_path / "one", [*lora, "data.batch_size=8"])
    assert one.returncode == 0, tail(one)
    two = run_in(tmp_path / "two", [*lora, "trainer=cpu_fsdp", "data.batch_size=4"])
    assert two.returncode == 0, tail(two)
    differences = relative_differences(summary(tmp_path / "two")["final"], summary(tmp_path / "one")["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, error",
    [
        ("raise", "RankFailed: rank 1: RuntimeError: injected failure on rank 1 after step 3"),
        ("poison", "RankFailed: rank 1: NonFiniteError: Non-finite loss at step 3"),
    ],
)
def test_a_failure_on_rank_1_ends_both_ranks_and_is_recorded_once(tmp_path, fault, error):
    marker = tmp_path / "struck"
    injected = [
        "+callbacks.fault._target_=tests.helpers.faults.OnRank",
        "+callbacks.fault.rank=1",
        "+callbacks.fault.step=3",
        f"+callbacks.fault.fault={fault}",
        f"+callbacks.fault.marker={marker}",
    ]
    result = run_in(tmp_path / "run", [*SMOKE, "trainer=cpu_ddp", *injected], timeout=120)
    ended = time.time()
    assert result.returncode == 1, tail(result)
    assert ended - float(marker.read_text()) < 20  # seconds, not a collective's timeout (30 min)
    recorded = summary(tmp_path / "run")
    assert recorded["status"] == "failed"
    assert recorded["error"].startswith(error), recorded["error"]
    assert recorded["steps"] == 3  # (a rerun resumes: the SIGKILL test below)


@pytest.mark.slow
def test_a_sigkilled_rank_ends_the_job_and_the_rerun_resumes_to_the_same_metrics(tmp_path, smoke_runs):
    marker = tmp_path / "struck"
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.OnRank",
        "+callbacks.fault.rank=1",
        "+callbacks.fault.step=7",
        "+callbacks.fault.fault=kill",
        f"+callbacks.fault.marker={marker}",
    ]
    overrides = [*SHARED, "trainer=cpu_ddp", PER_RANK, *fault]
    killed = run_in(tmp_path / "run", overrides, timeout=120)
    assert killed.returncode != 0 and marker.exists(), tail(killed)
    assert summary(tmp_path / "run")["status"] != "completed"
    resumed = run_in(tmp_path / "run", overrides)
    assert resumed.returncode == 0, tail(resumed)
    assert "Resuming from" in resumed.stderr and "(step 5)" in resumed.stderr
    assert [r["step"] for r in records(tmp_path / "run") if "train/loss" in r] == list(range(STEPS))
    differences = relative_differences(summary(tmp_path / "run")["final"], summary(smoke_runs["ddp"])["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences


@pytest.mark.slow
def test_torchrun_starts_two_ranks_of_one_run(tmp_path, smoke_runs):
    import subprocess
    import sys

    from tests.helpers import ROOT

    port = str(29_100 + os.getpid() % 800)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    command += ["-m", "gpo_lab", *SHARED, "trainer=cpu_ddp", PER_RANK, f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, tail(result)
    assert [r["step"] for r in records(tmp_path) if "train/loss" in r] == list(range(STEPS))
    differences = relative_differences(summary(tmp_path)["final"], summary(smoke_runs["one"])["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences


@pytest.mark.slow
def test_a_sweep_that_lightning_would_relaunch_is_refused(tmp_path):
    from tests.helpers import ROOT
    from tests.helpers.cli import run_cli

    result = run_cli(["-m", *SMOKE, "trainer=cpu_ddp", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "Lightning would start the extra ranks by re-running the whole sweep" in result.stderr
    assert not list(tmp_path.rglob("summary.json")) and not list(tmp_path.rglob("train_ddp_process_1.log"))


# ----------------------------------------------------------------------------------- several nodes, on paper
TWO_NODES = {  # what srun sets in the tenth of 16 tasks (node 1, local rank 1)
    "SLURM_NTASKS": "16",
    "SLURM_NTASKS_PER_NODE": "8",
    "SLURM_PROCID": "9",
    "SLURM_NODEID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "gpo_lab",
    "SLURM_NODELIST": "node[1-2]",
}


def test_two_nodes_of_eight_gpus_compose_to_sixteen_ranks(monkeypatch):
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from gpo_lab.parallel.ranks import launched_as_rank_zero, started_together
    from tests.helpers.runs import compose_config

    two_nodes = ["trainer.devices=8", "trainer.num_nodes=2", "hydra.launcher.nodes=2"]
    cfg = compose_config(
        ["cluster=example_site", "trainer=gpu_ddp", *two_nodes, "hydra.launcher.tasks_per_node=8"]
        + ["hydra.launcher.gpus_per_node=8", "+experiment=smoke"]
    )
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert (trainer.num_nodes, trainer.devices, trainer.strategy, trainer.accelerator) == (2, 8, "ddp", "gpu")
    for name, value in TWO_NODES.items():
        monkeypatch.setenv(name, value)
    assert started_together() and not launched_as_rank_zero()
    # The same trainer on CPUs (no GPU here): Lightning takes the ranks from SLURM, 16 of them. Building it
    # sets Lightning's process-wide rank to 9; put back afterwards, or later runs in this process log nothing.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    built = instantiate(trainer, accelerator="cpu", precision="32-true", logger=False, enable_progress_bar=False)
    assert (built.world_size, built.global_rank, built.node_rank, built.local_rank) == (16, 9, 1, 1)


# ----------------------------------------------------------------------------------- SLURM starts the ranks
@pytest.mark.slow
@pytest.mark.slurm
def test_two_slurm_tasks_train_one_run_and_a_requeue_resumes_to_the_same_metrics(slurm_cluster, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT
    from tests.helpers.runs import run_training

    overrides = [*SMOKE, "trainer.max_steps=20", "trainer.val_check_interval=10"]
    overrides += ["callbacks.checkpoint.every_n_train_steps=5"]
    slow = ["+callbacks.slow._target_=tests.helpers.faults.SlowDown", "+callbacks.slow.seconds=0.3"]
    tasks = ["cluster=local_slurm", "hydra.launcher.tasks_per_node=2", "trainer=cpu_ddp", "data.batch_size=2"]
    sweep = tmp_path / "requeue"
    command = [sys.executable, "-m", "gpo_lab", "-m", *tasks, *overrides, *slow, f"hydra.sweep.dir={sweep}"]
    launch = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoint = wait_for(lambda: next(sweep.glob("*/checkpoints/last.ckpt"), None), 240, "a first checkpoint")
        job_id = wait_for(
            lambda: subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split(),
            30,
            "the job in squeue",
        )[0]
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        _, stderr = launch.communicate(timeout=400)
    finally:
        launch.kill()
    assert launch.returncode == 0, stderr[-3000:]
    run_dir = checkpoint.parent.parent
    recorded = summary(run_dir)
    assert recorded["status"] == "completed" and recorded["steps"] == 20
    logs = "".join(p.read_text() for p in sweep.rglob("*_log.err"))
    assert "Resuming from" in logs and "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    assert [r["step"] for r in records(run_dir) if "train/loss" in r] == list(range(20))  # each step once
    one = run_training([*overrides, "data.batch_size=4"], tmp_path / "one")  # one process, the global batch
    differences = relative_differences(recorded["final"], one["final"])
    print(f"max relative difference: {max(differences.values()):.2e}")
    assert max(differences.values()) < TOLERANCE, differences
