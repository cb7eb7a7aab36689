"""Stage 1: the SFT policy, a tiny causal LM trained from scratch to imitate the behaviour generator.

It becomes both pi_ref and the starting policy of every GPO run. Training is deterministic given
its settings, so the result is cached on disk under a hash of everything that determines it
(task, behaviour, model, SFT settings, its seed): a sweep trains it once per seed, and every job of
that seed loads the same weights.
An entry whose weights or metrics do not load is moved aside and trained again.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from gpo_lab.data.datamodule import pad_rows
from gpo_lab.errors import ConfigError
from gpo_lab.eval.sampling import encode_prompts
from gpo_lab.models.hf import disable_dropout
from gpo_lab.scoring.logprobs import token_logprobs
from gpo_lab.store.cache import cached_value, spec_key
from gpo_lab.tasks.synthetic.behaviour import NoisyBehaviour
from gpo_lab.tasks.synthetic.task import TopicTask

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
SFT_VERSION = 1  # bump when the training procedure changes, so old cache entries are not reused
# How a user points the synthetic task's cache elsewhere (conf/experiment/synthetic.yaml).
CACHE_FIX = ", or set synthetic.cache_dir to one"


@dataclass(frozen=True)
class SFTSettings:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"synthetic.sft needs steps >= 1, batch_size >= 1 and lr > 0; got {self}.")


def encode_demonstrations(tokenizer, demos: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) rows, encoded as the preference data module encodes pairs."""
    prompts = encode_prompts(tokenizer, [prompt for prompt, _ in demos])
    responses = tokenizer([response for _, response in demos], add_special_tokens=False)["input_ids"]
    return [(p, [*r, tokenizer.eos_token_id]) for p, r in zip(prompts, responses)]


def fresh_model(model: dict[str, Any], tokenizer, seed: int) -> torch.nn.Module:
    """The untrained model the config describes, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return disable_dropout(instantiate(model, tokenizer=tokenizer))


def train_sft(
    policy: torch.nn.Module, task: TopicTask, behaviour: NoisyBehaviour, tokenizer, settings: SFTSettings
) -> dict[str, float]:
    """Maximum likelihood on fresh demonstrations every step (no epoch, so no overfitting)."""
    rng = random.Random(settings.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to a tenth
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    policy.train()
    started, recent = time.time(), []
    bar = tqdm(range(settings.steps), desc="SFT", dynamic_ncols=True, mininterval=1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for step in bar:
            rows = encode_demonstrations(tokenizer, behaviour.demonstrations(task, settings.batch_size, rng))
            values, _ = token_logprobs(policy, **pad_rows(rows, tokenizer.pad_token_id))
            loss = -values.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            recent = (recent + [loss.item()])[-50:]
            if step % 50 == 0 or step + 1 == settings.steps:
                bar.set_postfix(nll=f"{sum(recent) / len(recent):.3f}")
            if (step + 1) % max(1, settings.steps // 5) == 0:
                log.info("SFT step %d/%d: token NLL %.4f", step + 1, settings.steps, sum(recent) / len(recent))
    policy.eval()
    return {"sft_token_nll": sum(recent) / len(recent), "sft_seconds": round(time.time() - started, 1)}


def sft_policy(
    task: TopicTask,
    behaviour: NoisyBehaviour,
    tokenizer,
    model: DictConfig | dict,
    settings: SFTSettings,
    cache_dir: str | Path,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The SFT policy for these settings: loaded from the cache, or trained and cached first.

    Returns the model (eval mode) and a description: cache key, whether it was trained now, its loss.
    """
    model_spec = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else dict(model)
    spec = {
        "stage": "sft",
        "version": SFT_VERSION,
        "task": asdict(task),
        "behaviour": asdict(behaviour),
        "model": model_spec,
        "sft": asdict(settings),
    }

    def build(directory: Path) -> None:
        log.info("Training the SFT policy (%d steps); it is cached for later runs.", settings.steps)
        policy = fresh_model(model_spec, tokenizer, settings.seed)
        metrics = train_sft(policy, task, behaviour, tokenizer, settings)
        save_model(policy, str(directory / WEIGHTS_FILE))
        (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")

    def read(directory: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
        policy = fresh_model(model_spec, tokenizer, settings.seed)
        load_model(policy, str(directory / WEIGHTS_FILE))
        metrics = json.loads((directory / METRICS_FILE).read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"{METRICS_FILE} holds {type(metrics).__name__}, not an object")
        return policy, metrics

    (policy, metrics), entry, built = cached_value(cache_dir, "sft", spec, build, read, CACHE_FIX)
    if not built:
        log.info("SFT policy loaded from the cache: %s", entry)
    policy.eval()
    info = {"sft_key": spec_key(spec), "sft_path": str(entry), "sft_trained_now": built, **metrics}
    return policy, info
