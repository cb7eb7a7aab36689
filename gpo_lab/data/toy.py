"""A small preference dataset generated in code, so the smoke experiment needs no download.

Prompts ask for the sum of two numbers; the chosen answer is correct and polite, the rejected
one wrong or curt. It has the prompt/chosen/rejected schema of real datasets.
"""

from __future__ import annotations

import random

import datasets


def arithmetic_preferences(num_pairs: int = 256, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = []
    for _ in range(num_pairs):
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        rows.append(
            {
                "prompt": f"What is {a} plus {b}?",
                "chosen": f"{a} plus {b} is {a + b}.",
                "rejected": rng.choice([f"It is {wrong}.", "Work it out yourself.", f"{wrong}"]),
            }
        )
    return datasets.Dataset.from_list(rows)
