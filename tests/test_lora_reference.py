"""The adapters-off reference of a LoRA policy is the initial policy, measured after training for
every accepted peft option; the options under which it is not are refused at start-up."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from gpo_lab.errors import ConfigError
from gpo_lab.models.reference import AdaptersDisabled, frozen_copy
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer

peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install 'gpo_lab[lora]')")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def biased_causal_lm(tokenizer):
    """The tiny Llama with biases in its attention and MLP projections (so that bias options matter)."""
    config = tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1).config
    config.attention_bias = config.mlp_bias = True
    return LlamaForCausalLM(config)


def lora_policy(**options):
    from gpo_lab.models.lora import with_lora

    torch.manual_seed(0)
    return with_lora(byte_tokenizer(), base="tests.test_lora_reference.biased_causal_lm", r=4, alpha=8, **options)


IDS = torch.randint(3, 200, (4, 10), generator=torch.Generator().manual_seed(1))


def sequence_logps(model) -> torch.Tensor:
    """log pi(ids) from the model's own forward pass, every token after the first."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=IDS).logits.double(), -1)
    return log_probs[:, :-1].gather(-1, IDS[:, 1:, None]).squeeze(-1).sum(-1)


def train_a_few_steps(policy, steps: int = 5) -> None:
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = -torch.log_softmax(policy(input_ids=IDS).logits, -1)[..., 7].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def adapters_off_logps(policy) -> torch.Tensor:
    with policy.disable_adapter():
        return sequence_logps(policy)


ACCEPTED = {
    "defaults": {},
    "modules_to_save": {"modules_to_save": ["lm_head"]},
    "use_dora": {"use_dora": True},
    "use_rslora": {"use_rslora": True},
    "init gaussian": {"init_lora_weights": "gaussian"},
    "init orthogonal": {"init_lora_weights": "orthogonal"},
}


@pytest.mark.parametrize("options", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_reference_stays_the_initial_policy_through_training(options):
    policy = lora_policy(**options)
    initial = sequence_logps(policy)
    reference = AdaptersDisabled(policy)  # the start-up check accepts the option
    train_a_few_steps(policy)
    assert (sequence_logps(policy) - initial).abs().max() > 0.05  # the policy moved
    assert torch.allclose(sequence_logps(reference), initial, rtol=0, atol=1e-5)


REFUSED = {
    "bias all": ({"bias": "all"}, "model.policy.bias=none"),
    "bias lora_only": ({"bias": "lora_only"}, "model.policy.bias=none"),
    "init false": ({"init_lora_weights": False}, "starts the adapters non-zero"),
    "init pissa": ({"init_lora_weights": "pissa"}, "rewrites the base weights"),
    "init olora": ({"init_lora_weights": "olora"}, "rewrites the base weights"),
}


@pytest.mark.parametrize(("options", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_options_that_move_the_base_model_are_refused_and_copied(options, message):
    policy = lora_policy(**options)
    initial = sequence_logps(policy)
    with pytest.raises(ConfigError, match=message):
        AdaptersDisabled(policy)
    copied = frozen_copy(policy)  # reference=copy copies the whole policy instead
    assert not isinstance(copied, AdaptersDisabled)
    train_a_few_steps(policy)
    assert (adapters_off_logps(policy) - initial).abs().max() > 0.05  # why it is refused: the base drifts
    assert torch.allclose(sequence_logps(copied), initial, rtol=0, atol=1e-6)


def test_trained_base_weights_are_refused_whatever_the_option():
    """A base weight set to train by hand is not undone by switching the adapters off either."""
    policy = lora_policy()
    policy.get_base_model().model.norm.weight.requires_grad_(True)
    with pytest.raises(ConfigError, match="base weights train.*norm.weight"):
        AdaptersDisabled(policy)
