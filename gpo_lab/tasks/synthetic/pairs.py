"""Stage 2: the offline preference data mu, labelled by Bradley-Terry on the golden reward.

For each prompt two responses are drawn (from the SFT policy, as in the paper, or from the
behaviour generator) and the first is preferred with probability sigmoid((r1 - r2) / T): noisy
labels, like human raters'. ``label_temperature=0`` labels deterministically (the better one wins,
a tie by a fair coin). Pairs whose two responses are the same carry no preference and are
dropped. The prompts are split by topic set: a fraction of the topic sets of every size is held out,
the validation pairs (and the evaluation prompts the callbacks sample on) come from those, and the
training pairs never do. A cached ``pairs.json`` that does not read back as such rows is moved aside and
generated again.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets

from gpo_lab.errors import ConfigError
from gpo_lab.eval.draw import prompt_uniforms
from gpo_lab.eval.sampling import decode, encode_prompts, sample_responses
from gpo_lab.store.cache import cached_value, spec_key
from gpo_lab.tasks.synthetic.behaviour import NoisyBehaviour
from gpo_lab.tasks.synthetic.sft import CACHE_FIX
from gpo_lab.tasks.synthetic.task import TopicTask

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.json"
# 2: evaluation prompts disjoint from training prompts (by topic set); 3: one random stream per prompt
PAIRS_VERSION = 3
# The policy's streams for the two responses of each split: other numbers than the sample bank's
# (gpo_lab.eval.draw), so that no pair response is a sample-bank draw again.
PAIR_STREAMS = {("train", 0): 2, ("train", 1): 3, ("validation", 0): 4, ("validation", 1): 5}
SOURCES = ("policy", "behaviour")
SPLITS = ("train", "validation")
TEXT_FIELDS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PairSettings:
    num_train_prompts: int = 8000
    num_eval_prompts: int = 512
    held_out_fraction: float = 0.25  # of the topic sets of each size, reserved for evaluation
    source: str = "policy"  # who writes the two responses: the SFT policy or the behaviour generator
    label_temperature: float = 0.5  # T of the Bradley-Terry labels; 0 = deterministic
    seed: int = 0
    batch_size: int = 512  # sampling batch

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"synthetic.pairs.source must be one of {SOURCES}, got {self.source!r}.")
        if self.label_temperature < 0:
            raise ConfigError(f"synthetic.pairs.label_temperature must be >= 0, got {self.label_temperature}.")
        if self.num_train_prompts < 1 or self.num_eval_prompts < 1:
            raise ConfigError("synthetic.pairs.num_train_prompts and num_eval_prompts must be >= 1.")
        if not 0 < self.held_out_fraction < 1:
            raise ConfigError(f"synthetic.pairs.held_out_fraction must be in (0, 1), got {self.held_out_fraction}.")


def preference_probability(reward_a: float, reward_b: float, temperature: float) -> float:
    """P(a preferred to b): Bradley-Terry with temperature T, or 1 / 0 / 1/2 when T = 0."""
    if temperature == 0:
        return 1.0 if reward_a > reward_b else 0.0 if reward_a < reward_b else 0.5
    z = (reward_a - reward_b) / temperature
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def label_pairs(
    task: TopicTask, prompts: list[str], first: list[str], second: list[str], temperature: float, rng: random.Random
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rows, counts = [], {"identical": 0, "empty": 0}
    for prompt, a, b in zip(prompts, first, second):
        if a == b:
            counts["identical"] += 1
            continue
        if not a.strip() or not b.strip():
            counts["empty"] += 1
            continue
        ra, rb = task.reward(prompt, a), task.reward(prompt, b)
        a_wins = rng.random() < preference_probability(ra, rb, temperature)
        (chosen, r_chosen), (rejected, r_rejected) = ((a, ra), (b, rb)) if a_wins else ((b, rb), (a, ra))
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "reward_chosen": r_chosen,
                "reward_rejected": r_rejected,
            }
        )
    return rows, counts


def _responses(
    settings: PairSettings,
    task: TopicTask,
    behaviour: NoisyBehaviour,
    policy,
    tokenizer,
    prompts: list[str],
    stream: int,
    rng: random.Random,
    desc: str,
) -> list[str]:
    if settings.source == "behaviour":
        return [behaviour.respond(task, task.prompt_topics(p), rng) for p in prompts]
    max_new_tokens = task.max_response_words + 1
    ids = sample_responses(
        policy,
        encode_prompts(tokenizer, prompts),
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        uniforms=prompt_uniforms(settings.seed, stream, range(len(prompts)), max_new_tokens),
        batch_size=settings.batch_size,
        progress=desc,
    )
    return decode(tokenizer, ids)


def generate_pairs(
    task: TopicTask, behaviour: NoisyBehaviour, policy, tokenizer, settings: PairSettings
) -> dict[str, Any]:
    """Train and validation rows (prompt, chosen, rejected, and their golden rewards) plus statistics."""
    rng = random.Random(settings.seed)
    held_out = task.held_out_topic_sets(settings.held_out_fraction, seed=settings.seed)
    eval_prompts = task.prompts(settings.num_eval_prompts, seed=settings.seed + 1, held_out=held_out)
    train_prompts = task.training_prompts(settings.num_train_prompts, rng, held_out)
    out: dict[str, Any] = {"stats": {"mu_held_out_topic_sets": len(held_out)}}
    for split, prompts in (("train", train_prompts), ("validation", eval_prompts)):
        first, second = (
            _responses(
                settings,
                task,
                behaviour,
                policy,
                tokenizer,
                prompts,
                PAIR_STREAMS[split, k],
                rng,
                f"pairs: {split} responses {k + 1}/2",
            )
            for k in (0, 1)
        )
        rows, dropped = label_pairs(task, prompts, first, second, settings.label_temperature, rng)
        if not rows:
            raise ConfigError(f"No usable {split} pair was generated; raise synthetic.pairs.num_*_prompts.")
        rewards = [task.reward(p, r) for p, r in zip(prompts + prompts, first + second)]
        out[split] = rows
        out["stats"] |= {
            f"mu_{split}_dropped_identical": dropped["identical"],
            f"mu_{split}_dropped_empty": dropped["empty"],
            f"mu_{split}_reward_mean": sum(rewards) / len(rewards),
            f"mu_{split}_label_agrees_with_reward": sum(r["reward_chosen"] > r["reward_rejected"] for r in rows)
            / len(rows),
            f"mu_{split}_reward_ties": sum(r["reward_chosen"] == r["reward_rejected"] for r in rows) / len(rows),
        }
    return out


def offline_pairs(
    task: TopicTask,
    behaviour: NoisyBehaviour,
    policy,
    tokenizer,
    settings: PairSettings,
    sft_key: str,
    cache_dir: str | Path,
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """The offline pairs for these settings (train and validation splits), from the cache or generated."""
    spec = {
        "stage": "pairs",
        "version": PAIRS_VERSION,
        "task": asdict(task),
        "pairs": asdict(settings),
        "source": sft_key if settings.source == "policy" else asdict(behaviour),
    }

    def build(directory: Path) -> None:
        log.info(
            "Generating %d + %d offline pairs (source: %s).",
            settings.num_train_prompts,
            settings.num_eval_prompts,
            settings.source,
        )
        was_training = policy.training
        policy.eval()
        try:
            (directory / PAIRS_FILE).write_text(
                json.dumps(generate_pairs(task, behaviour, policy, tokenizer, settings))
            )
        finally:
            policy.train(was_training)

    (splits, stats), entry, built = cached_value(cache_dir, "pairs", spec, build, read_pairs, CACHE_FIX)
    if not built:
        log.info("Offline pairs loaded from the cache: %s", entry)
    return splits, {"pairs_key": spec_key(spec), "pairs_generated_now": built, **stats}


def read_pairs(directory: Path) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """The splits and statistics of a cached ``pairs.json``, refused (ValueError) unless they are what
    :func:`generate_pairs` writes: a damaged file must not train."""
    data = json.loads((directory / PAIRS_FILE).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("stats"), dict):
        raise ValueError(f"{PAIRS_FILE} is not an object with stats")
    for split in SPLITS:
        rows = data.get(split)
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"{PAIRS_FILE} has no {split} rows")
        if not all(isinstance(row, dict) and all(isinstance(row.get(k), str) for k in TEXT_FIELDS) for row in rows):
            raise ValueError(f"{PAIRS_FILE} has a {split} row without text {', '.join(TEXT_FIELDS)}")
    splits = datasets.DatasetDict({split: datasets.Dataset.from_list(data[split]) for split in SPLITS})
    return splits, data["stats"]
