"""Regularization measures against closed forms: both KL estimators against the exact KL of a tiny
model computed by enumerating every response, and R_mu = E_mu[rho^2]/2 against a hand computation."""

import math
from functools import partial

import datasets
import pytest
import pytorch_lightning as pl
import torch

from gpo_lab.data import PreferenceDataModule
from gpo_lab.eval import kl_estimates
from gpo_lab.eval.sampling import encode_prompts, generate_bank
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.reference import freeze
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import word_tokenizer
from gpo_lab.training.gpo_module import GPOModule
from tests.helpers.exact_kl import assert_estimates_match, enumerated_kl

HORIZON = 4


def peaked_model(tokenizer, seed: int, std: float = 0.15):
    """A random tiny model whose next-token distributions are far from uniform (so the KL is not tiny)."""
    torch.manual_seed(seed)
    model = tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=32)
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=std)
    return freeze(model)


@torch.no_grad()
def exact_logprobs(model, prompt: list[int], responses: list[tuple[int, ...]]) -> list[float]:
    """log pi(y|x) of responses of one length, token by token from a plain forward pass (no padding, no cache)."""
    ids = torch.tensor([prompt + list(response) for response in responses])
    log_probs = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)
    steps = torch.arange(len(prompt) - 1, ids.shape[1] - 1)
    return log_probs[:, steps].gather(-1, ids[:, len(prompt) :, None]).squeeze(-1).sum(-1).tolist()


def exact_logprob(model, prompt: list[int], response: tuple[int, ...]) -> float:
    return exact_logprobs(model, prompt, [response])[0]


@pytest.fixture(scope="module")
def setting():
    tokenizer = word_tokenizer(["a", "b"])
    policy, reference = peaked_model(tokenizer, 0), peaked_model(tokenizer, 1)
    prompts = ["a", "b a"]  # different lengths: the sampler's left padding is exercised
    prompt_ids = encode_prompts(tokenizer, prompts)
    exact, table = enumerated_kl(
        prompt_ids,
        len(tokenizer),
        tokenizer.eos_token_id,
        HORIZON,
        lambda prompt, group: exact_logprobs(policy, prompt, group),
        lambda prompt, group: exact_logprobs(reference, prompt, group),
    )
    return tokenizer, policy, reference, prompts, prompt_ids, exact, table


def test_both_estimators_match_the_enumerated_kl(setting):
    tokenizer, policy, reference, prompts, prompt_ids, exact, _ = setting
    copies = 3000
    bank = generate_bank(
        policy,
        reference,
        tokenizer,
        prompts * copies,
        prompt_ids * copies,
        max_new_tokens=HORIZON,
        seed=123,
        batch_size=1000,
        progress=False,
    )
    estimates = kl_estimates(bank)
    assert_estimates_match(estimates, exact)
    # Per prompt as well (the two prompts differ in length and were sampled in one padded batch).
    for index in range(len(prompts)):
        sub = [i for i in range(len(bank)) if i % len(prompts) == index]
        ratio = (bank.policy_logps - bank.reference_logps)[sub]
        assert abs(ratio.mean().item() - exact[index]) < 3 * ratio.std().item() / math.sqrt(len(sub))


def test_bank_scores_are_the_exact_sequence_logprobs(setting):
    tokenizer, policy, reference, prompts, prompt_ids, _, table = setting
    bank = generate_bank(
        policy,
        reference,
        tokenizer,
        prompts * 20,
        prompt_ids * 20,
        max_new_tokens=HORIZON,
        seed=7,
        batch_size=16,
        progress=False,
    )
    for i, response in enumerate(bank.policy_ids):
        assert len(response) <= HORIZON
        assert tokenizer.eos_token_id not in response[:-1]  # sampling stops at EOS
        log_p, log_q = table[(tuple(bank.prompt_ids[i]), tuple(response))]
        assert bank.policy_logps[i].item() == pytest.approx(log_p, abs=1e-4)
        assert bank.reference_logps[i].item() == pytest.approx(log_q, abs=1e-4)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(setting):
    tokenizer, policy, reference, prompts, prompt_ids, _, _ = setting
    draw = partial(
        generate_bank,
        policy,
        reference,
        tokenizer,
        prompts * 8,
        prompt_ids * 8,
        max_new_tokens=HORIZON,
        batch_size=5,
        progress=False,
    )
    state = torch.random.get_rng_state()
    first, again, other = draw(seed=3), draw(seed=3), draw(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first.policy_ids == again.policy_ids and first.reference_ids == again.reference_ids
    assert first.policy_ids != other.policy_ids


def test_kl_of_the_reference_to_itself_is_zero(setting):
    tokenizer, policy, _, prompts, prompt_ids, _, _ = setting
    bank = generate_bank(
        policy, policy, tokenizer, prompts * 10, prompt_ids * 10, max_new_tokens=HORIZON, seed=0, progress=False
    )
    estimates = kl_estimates(bank)
    assert estimates["kl_seq"] == 0 and estimates["kl_token"] == pytest.approx(0, abs=1e-9)


def test_offline_regularizer_matches_a_hand_computation(tmp_path):
    """val/offline_reg = mean over held-out pairs of rho^2 / 2, with rho from log-probs summed by hand."""
    tokenizer = word_tokenizer(["a", "b", "c"])
    policy, reference = peaked_model(tokenizer, 2).requires_grad_(True).train(), peaked_model(tokenizer, 3)
    pairs = [("a", "b c", "c"), ("b a", "a", "a b"), ("c", "c c b", "b"), ("a b", "b", "c a")]
    data = datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs])
    datamodule = PreferenceDataModule(
        datasets.DatasetDict(train=data, validation=data),
        val_split="validation",
        max_length=16,
        max_prompt_length=4,
        batch_size=3,
        eval_batch_size=3,
        tokenizer=tokenizer,
    )
    module = GPOModule(policy, reference, GPOLoss("logistic"), beta=0.1, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)

    def log_pi(model, prompt, response):  # the response is scored with its EOS, as the data module encodes it
        tokens = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return exact_logprob(model, encode_prompts(tokenizer, [prompt])[0], tuple(tokens))

    rho = torch.tensor(
        [
            (log_pi(policy, p, c) - log_pi(reference, p, c)) - (log_pi(policy, p, r) - log_pi(reference, p, r))
            for p, c, r in pairs
        ],
        dtype=torch.float64,
    )
    half_square = rho**2 / 2
    expected = half_square.mean().item()
    expected_se = half_square.std(unbiased=True).item() / math.sqrt(len(pairs))
    assert expected > 0.01
    assert trainer.callback_metrics["val/offline_reg"].item() == pytest.approx(expected, rel=1e-4)
    assert trainer.callback_metrics["val/offline_reg_se"].item() == pytest.approx(expected_se, rel=1e-4)
