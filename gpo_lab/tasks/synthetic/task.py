"""The synthetic task: prompts that name topics, short word responses, and the golden reward r*.

A prompt reads ``about apple river stone :`` (2 to 4 distinct topic words). A response is a
short sequence of words from the same closed vocabulary (topics and filler words). The golden
reward is

    r*(x, y) = coverage * #(prompt topics that y mentions)
               - off_topic * #(topic words in y that the prompt does not name)
               - repetition * #(words of y that repeat an earlier word of y)
               - length * #(words of y)

so the best response names every prompt topic once and stops: saying more costs length,
drifting off topic or repeating costs more, and a policy pushed far from a sensible reference
(longer, repetitive, off-topic responses) loses reward. Everything is generated from a seed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import cache

from gpo_lab.errors import ConfigError
from gpo_lab.models.tokenizers import word_tokenizer

TOPIC_WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "forest",
    "engine",
    "garden",
    "market",
    "winter",
    "violin",
    "harbor",
    "candle",
    "desert",
    "bridge",
    "copper",
    "meadow",
    "rocket",
    "island",
    "lantern",
    "pepper",
    "castle",
    "thunder",
    "velvet",
    "orchard",
)
FILLER_WORDS = ("the", "and", "with", "very", "also", "some", "then", "really")
PROMPT_OPENER = "about"
PROMPT_CLOSER = ":"


@dataclass(frozen=True)
class TopicTask:
    """Vocabulary, prompt distribution and golden reward of the synthetic task."""

    num_topics: int = 16
    min_prompt_topics: int = 2
    max_prompt_topics: int = 4
    max_response_words: int = 10
    coverage: float = 1.0
    off_topic: float = 1.0
    repetition: float = 0.5
    length: float = 0.1

    def __post_init__(self):
        if not 2 <= self.num_topics <= len(TOPIC_WORDS):
            raise ConfigError(f"synthetic.task.num_topics must be in [2, {len(TOPIC_WORDS)}], got {self.num_topics}.")
        if not 1 <= self.min_prompt_topics <= self.max_prompt_topics < self.num_topics:
            raise ConfigError(
                "synthetic.task needs 1 <= min_prompt_topics <= max_prompt_topics < num_topics; got "
                f"{self.min_prompt_topics}, {self.max_prompt_topics}, {self.num_topics}."
            )
        if self.max_response_words < self.max_prompt_topics:
            raise ConfigError(
                f"synthetic.task.max_response_words={self.max_response_words} must leave room for "
                f"every prompt topic (max_prompt_topics={self.max_prompt_topics})."
            )
        if min(self.coverage, self.off_topic, self.repetition, self.length) < 0:
            raise ConfigError("synthetic.task reward weights (coverage, off_topic, repetition, length) must be >= 0.")
        if self.coverage <= self.length:
            raise ConfigError(
                f"synthetic.task.coverage={self.coverage} must exceed length={self.length}: otherwise "
                "the empty response is the best one and there is nothing to learn."
            )

    # ----------------------------------------------------------------- vocabulary
    @property
    def topics(self) -> tuple[str, ...]:
        return TOPIC_WORDS[: self.num_topics]

    @property
    def words(self) -> list[str]:
        return [PROMPT_OPENER, PROMPT_CLOSER, *self.topics, *FILLER_WORDS]

    def tokenizer(self):
        return word_tokenizer(self.words)

    # ----------------------------------------------------------------- prompts
    def sample_prompt_topics(self, rng: random.Random) -> tuple[str, ...]:
        k = rng.randint(self.min_prompt_topics, self.max_prompt_topics)
        return tuple(rng.sample(self.topics, k))

    @staticmethod
    def render_prompt(topics: tuple[str, ...]) -> str:
        return " ".join([PROMPT_OPENER, *topics, PROMPT_CLOSER])

    def prompt_topics(self, prompt: str) -> tuple[str, ...]:
        """The topics a prompt names (its words between the opener and the closer)."""
        words = prompt.split()
        if len(words) < 2 or words[0] != PROMPT_OPENER or words[-1] != PROMPT_CLOSER:
            raise ValueError(f"Not a prompt of the synthetic task: {prompt!r}")
        return tuple(words[1:-1])

    # ----------------------------------------------------------------- held-out prompts
    def held_out_topic_sets(self, fraction: float, seed: int) -> frozenset[frozenset[str]]:
        """The topic sets reserved for evaluation: ``fraction`` of the sets of each size, chosen by ``seed``.

        The partition is of topic *sets*, not of prompts: ``about apple river :`` and ``about river
        apple :`` ask for the same response, so both are held out or neither is. Every size gets its
        share (at least one set, never all), so the small two-topic space is held out in proportion.
        """
        return _held_out_topic_sets(self.topics, self.min_prompt_topics, self.max_prompt_topics, fraction, seed)

    def prompts(self, count: int, seed: int, held_out: frozenset[frozenset[str]] | None = None) -> list[str]:
        """``count`` distinct prompts whose topic sets are all in ``held_out`` (all prompts when None)."""
        rng = random.Random(seed)
        seen, prompts = set(), []
        for _ in range(100 * count + 1000):
            if len(prompts) == count:
                break
            topics = self.sample_prompt_topics(rng)
            prompt = self.render_prompt(topics)
            if prompt not in seen and (held_out is None or frozenset(topics) in held_out):
                seen.add(prompt)
                prompts.append(prompt)
        else:
            raise ConfigError(
                f"Cannot draw {count} distinct prompts from {self.num_topics} topics"
                + (" within the held-out topic sets; raise synthetic.pairs.held_out_fraction" if held_out else "")
                + "; raise synthetic.task.num_topics or lower the number of prompts."
            )
        return prompts

    def evaluation_prompts(self, count: int, fraction: float, seed: int) -> tuple[list[str], list[str]]:
        """Validation and test prompts, ``count`` of each, from two disjoint halves of the held-out topic sets.

        Validation chooses a checkpoint and test reports it, so neither set may see the other's topic sets.
        Both are drawn i.i.d. like the training prompts (repeats allowed): a set of distinct prompts would
        run out of the few two-topic sets and under-weight them against training's mix of topic counts.
        """
        validation, test = split_in_halves(self.held_out_topic_sets(fraction, seed), seed)
        rng = random.Random(f"evaluation prompts {seed}")
        return self.training_prompts(count, rng, validation, keep=True), self.training_prompts(
            count, rng, test, keep=True
        )

    def training_prompts(
        self, count: int, rng: random.Random, held_out: frozenset[frozenset[str]], keep: bool = False
    ) -> list[str]:
        """``count`` prompts drawn i.i.d. from the prompt distribution restricted to the sets not held out
        (to the sets in ``held_out`` when ``keep``)."""
        prompts = []
        while len(prompts) < count:
            topics = self.sample_prompt_topics(rng)
            if (frozenset(topics) in held_out) == keep:
                prompts.append(self.render_prompt(topics))
        return prompts

    # ----------------------------------------------------------------- golden reward
    def reward_terms(self, prompt: str, response: str) -> dict[str, int]:
        topics = set(self.prompt_topics(prompt))
        words = response.split()
        topic_words = set(self.topics)
        return {
            "covered": len(topics & set(words)),
            "off_topic": sum(w in topic_words and w not in topics for w in words),
            "repeated": len(words) - len(set(words)),
            "words": len(words),
        }

    def reward(self, prompt: str, response: str) -> float:
        """r*(x, y), as documented in the module docstring."""
        terms = self.reward_terms(prompt, response)
        return (
            self.coverage * terms["covered"]
            - self.off_topic * terms["off_topic"]
            - self.repetition * terms["repeated"]
            - self.length * terms["words"]
        )

    def best_response(self, prompt: str) -> str:
        """A response of maximal reward: every prompt topic once, nothing else."""
        return " ".join(self.prompt_topics(prompt))

    def max_reward(self, prompt: str) -> float:
        return len(self.prompt_topics(prompt)) * (self.coverage - self.length)


@cache
def _held_out_topic_sets(
    topics: tuple[str, ...], smallest: int, largest: int, fraction: float, seed: int
) -> frozenset[frozenset[str]]:
    if not 0 < fraction < 1:
        raise ConfigError(f"synthetic.pairs.held_out_fraction must be in (0, 1), got {fraction}.")
    rng = random.Random(seed)
    held_out: set[frozenset[str]] = set()
    for size in range(smallest, largest + 1):
        sets = [frozenset(c) for c in itertools.combinations(topics, size)]
        rng.shuffle(sets)
        share = min(len(sets) - 1, max(1, round(fraction * len(sets))))
        held_out.update(sets[:share])
    return frozenset(held_out)


def split_in_halves(
    sets: frozenset[frozenset[str]], seed: int
) -> tuple[frozenset[frozenset[str]], frozenset[frozenset[str]]]:
    """Two disjoint halves of a family of topic sets, half of each size in each, chosen by ``seed``."""
    first, second = set(), set()
    rng = random.Random(f"halves {seed}")
    for size in sorted({len(s) for s in sets}):
        same = sorted((s for s in sets if len(s) == size), key=sorted)
        rng.shuffle(same)
        first.update(same[: len(same) // 2])
        second.update(same[len(same) // 2 :])
    return frozenset(first), frozenset(second)
