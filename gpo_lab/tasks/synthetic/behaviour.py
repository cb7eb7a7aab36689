"""The noisy behaviour generator whose demonstrations the SFT policy imitates.

It knows roughly what a good response is but executes it sloppily: it names each prompt topic
only with probability ``cover``, drifts to other topics, repeats a word, and pads with filler
words. The SFT policy learned from it is therefore a spread-out reference with room to improve,
which is what the preference stage needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gpo_lab.errors import ConfigError
from gpo_lab.tasks.synthetic.task import FILLER_WORDS, TopicTask


@dataclass(frozen=True)
class NoisyBehaviour:
    cover: float = 0.6  # probability of naming each prompt topic
    off_topic: float = 0.3  # probability, for each of two chances, of naming another topic
    repeat: float = 0.2  # probability of repeating one of the words said
    fillers: float = 1.5  # mean number of filler words (geometric)

    def __post_init__(self):
        for name in ("cover", "off_topic", "repeat"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"synthetic.behaviour.{name} is a probability; got {getattr(self, name)}.")
        if self.fillers < 0:
            raise ConfigError(f"synthetic.behaviour.fillers must be >= 0, got {self.fillers}.")

    def respond(self, task: TopicTask, prompt_topics: tuple[str, ...], rng: random.Random) -> str:
        words = [topic for topic in prompt_topics if rng.random() < self.cover]
        others = [topic for topic in task.topics if topic not in prompt_topics]
        words += [rng.choice(others) for _ in range(2) if rng.random() < self.off_topic]
        if words and rng.random() < self.repeat:
            words.append(rng.choice(words))
        rng.shuffle(words)
        stop = 1.0 / (1.0 + self.fillers)  # geometric number of fillers with mean `fillers`
        while rng.random() > stop:
            words.insert(rng.randint(0, len(words)), rng.choice(FILLER_WORDS))
        if not words:
            words = [rng.choice(FILLER_WORDS)]
        return " ".join(words[: task.max_response_words])

    def demonstrations(self, task: TopicTask, count: int, rng: random.Random) -> list[tuple[str, str]]:
        """``count`` (prompt, response) pairs on freshly drawn prompts."""
        demos = []
        for _ in range(count):
            topics = task.sample_prompt_topics(rng)
            demos.append((task.render_prompt(topics), self.respond(task, topics, rng)))
        return demos
