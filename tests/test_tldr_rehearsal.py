"""+experiment=tldr_rehearsal: the TL;DR study's code path on tiny stand-ins built here, ending in a report."""

from __future__ import annotations

import json

import pytest
import transformers
from omegaconf import OmegaConf

from gpo_lab.data.sources import load
from gpo_lab.tasks import tldr_stand_ins
from tests.helpers import ROOT
from tests.helpers.cli import run_cli
from tests.helpers.runs import compose_config

# What the rehearsal may change: sizes, the names of what it loads, and what the device decides (CPU for GPU,
# float32 for bfloat16, which has no fast path on CPUs).
NAMES = {"name", "model.name", "judge.name", "data.dataset.path"}
SIZES = {
    "trainer.max_steps",
    "trainer.val_check_interval",
    "data.val_size",
    "data.batch_size",
    "data.eval_batch_size",
    "judge.batch_size",
    "callbacks.sample_bank.num_prompts",
    "callbacks.sample_bank.max_new_tokens",
    "callbacks.sample_bank.batch_size",
}
DEVICE = {"trainer.accelerator", "trainer.precision", "judge.dtype"}


def flat(config, prefix=""):
    """Every leaf of a config as dotted key -> value, interpolations unresolved (a stand-in is never built here)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_rehearsal_differs_from_the_study_only_in_sizes_names_and_device():
    study = flat(OmegaConf.to_container(compose_config(["+experiment=tldr"]), resolve=False))
    rehearsal = flat(OmegaConf.to_container(compose_config(["+experiment=tldr_rehearsal"]), resolve=False))
    user = {key for key in study.keys() | rehearsal.keys() if not key.startswith("hydra.")}
    differ = {key for key in user if study.get(key, "<absent>") != rehearsal.get(key, "<absent>")}
    assert differ - (NAMES | SIZES | DEVICE) == set()
    assert NAMES <= differ  # it reads nothing the study downloads
    # The same classes and code: model, tokenizer, judge, data format, optimizer, loss, callbacks.
    for key in ("model.policy._target_", "model.tokenizer._target_", "judge._target_", "data.dataset.format"):
        assert study[key] == rehearsal[key]
    assert (
        study["optim.optimizer._target_"]
        == rehearsal["optim.optimizer._target_"]
        == ("transformers.optimization.Adafactor")
    )


def test_the_stand_ins_have_the_real_ones_classes_and_the_datasets_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("GPO_LAB_CACHE", str(tmp_path))
    policy = tldr_stand_ins.tldr_stand_in("policy")
    assert tldr_stand_ins.tldr_stand_in("policy") == policy  # built once
    config = transformers.AutoConfig.from_pretrained(policy)
    assert config.model_type == "gpt_neox" and config.architectures == ["GPTNeoXForCausalLM"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(policy)
    assert type(tokenizer).__name__.startswith("GPTNeoXTokenizer") and tokenizer.eos_token == "<|endoftext|>"
    judge = transformers.AutoConfig.from_pretrained(tldr_stand_ins.tldr_stand_in("judge"))
    assert judge.architectures == ["GPTNeoXForSequenceClassification"] and judge.num_labels == 1
    rows = load(tldr_stand_ins.tldr_stand_in("data"), split="train")
    assert rows.column_names == ["prompt", "chosen", "rejected"] and len(rows) == tldr_stand_ins.TRAIN_PAIRS
    prompt = rows[0]["prompt"]
    assert prompt.startswith("SUBREDDIT: r/") and "\n\nTITLE: " in prompt and "\n\nPOST: " in prompt
    assert prompt.endswith("\n\nTL;DR:") and rows[0]["chosen"].startswith(" ")
    with pytest.raises(ValueError, match="unknown part 'weights'"):
        tldr_stand_ins.tldr_stand_in("weights")


@pytest.mark.slow
def test_the_rehearsal_command_runs_the_pipeline_and_ends_in_a_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "+experiment=tldr_rehearsal",
            "hydra.sweeper.params.loss=logistic",
            "hydra.sweeper.params.beta=0.1",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env={"GPO_LAB_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [p.parent for p in sweep.glob("*/summary.json")]
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert {"val/win_rate", "val/kl_seq", "val/offline_reg"} <= set(summary["final"])
    samples = [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {2, 4} and samples[0]["prompt"].endswith("TL;DR:")
    assert (sweep / "report.md").is_file() and (sweep / "tradeoff.png").is_file()
