"""KL(pi || pi_ref) of a sampler's response distribution by enumerating every response it can return,
the closed form the KL estimators are tested against."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

LogProbs = Callable[[list[int], list[tuple[int, ...]]], list[float]]  # (prompt, responses of one length) -> log p


def every_response(vocab_size: int, eos: int, horizon: int):
    """Every response the sampler can return: up to horizon-1 non-EOS tokens then EOS, or horizon non-EOS tokens."""
    others = [v for v in range(vocab_size) if v != eos]
    for length in range(horizon):
        for body in itertools.product(others, repeat=length):
            yield (*body, eos)
    yield from itertools.product(others, repeat=horizon)


def enumerated_kl(
    prompt_ids: list[list[int]], vocab_size: int, eos: int, horizon: int, policy: LogProbs, reference: LogProbs
) -> tuple[list[float], dict]:
    """The exact KL of each prompt, and the table {(prompt, response): (log pi, log pi_ref)} it sums over."""
    exact, table = [], {}
    for prompt in prompt_ids:
        responses = list(every_response(vocab_size, eos, horizon))
        for n in range(1, horizon + 1):
            group = [r for r in responses if len(r) == n]
            table.update(
                {
                    (tuple(prompt), r): pair
                    for r, pair in zip(group, zip(policy(prompt, group), reference(prompt, group)))
                }
            )
        p = torch.tensor([table[(tuple(prompt), r)][0] for r in responses], dtype=torch.float64)
        q = torch.tensor([table[(tuple(prompt), r)][1] for r in responses], dtype=torch.float64)
        assert p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)  # the enumeration covers every response
        exact.append((p.exp() * (p - q)).sum().item())
    return exact, table


def assert_estimates_match(estimates: dict[str, float], exact: list[float]) -> None:
    """Both KL estimators within 3 standard errors of the enumerated KL (mean over prompts), and the token-level
    one, an exact sum per sequence, with the lower variance."""
    target = sum(exact) / len(exact)
    assert 0.05 < target < 5  # a KL worth estimating
    for name in ("kl_seq", "kl_token"):
        assert abs(estimates[name] - target) < 3 * estimates[f"{name}_se"], (name, estimates, target)
    assert estimates["kl_token_se"] < estimates["kl_seq_se"]
