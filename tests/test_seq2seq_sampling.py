"""The sample bank, KL and win rate of an encoder-decoder (T5-style) policy, against exact enumeration:
both KL estimators within 3 standard errors of the KL summed over every response up to a short length."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from gpo_lab.eval import KLCallback, SampleBankCallback, WinRateCallback, kl_estimates
from gpo_lab.eval.judges import RewardJudge
from gpo_lab.eval.sampling import encode_prompts, generate_bank
from gpo_lab.models.reference import freeze
from gpo_lab.models.tiny import tiny_seq2seq_lm
from gpo_lab.models.tokenizers import word_tokenizer
from gpo_lab.store.per_prompt import read_per_prompt
from tests.helpers.exact_kl import assert_estimates_match, enumerated_kl

HORIZON = 3


def peaked_t5(tokenizer, seed: int, std: float = 1.0):
    """A random tiny T5 whose next-token distributions are far from uniform (so the KL is not tiny)."""
    torch.manual_seed(seed)
    model = tiny_seq2seq_lm(tokenizer, d_model=16, num_layers=1, num_heads=2)
    torch.nn.init.normal_(model.shared.weight, std=std)
    return freeze(model)


@torch.no_grad()
def exact_logprobs(model, prompt: list[int], responses: list[tuple[int, ...]], eos: int) -> list[float]:
    """log pi(y|x) of responses of one length from a plain forward pass: the whole response as the
    decoder's target behind the start token, the prompt (with EOS, as T5 ends encoder inputs) unpadded."""
    encoder = torch.tensor([prompt + [eos]] * len(responses))
    targets = torch.tensor([list(r) for r in responses])
    start = torch.full((len(responses), 1), model.config.decoder_start_token_id)
    logits = model(input_ids=encoder, decoder_input_ids=torch.cat([start, targets[:, :-1]], 1)).logits
    return torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None]).squeeze(-1).sum(-1).tolist()


@pytest.fixture(scope="module")
def setting():
    tokenizer = word_tokenizer(["a", "b"])
    policy, reference = peaked_t5(tokenizer, 0), peaked_t5(tokenizer, 1)
    prompts = ["a", "b a b"]  # different lengths: the encoder's right padding is exercised
    prompt_ids = encode_prompts(tokenizer, prompts)
    eos = tokenizer.eos_token_id
    exact, table = enumerated_kl(
        prompt_ids,
        len(tokenizer),
        eos,
        HORIZON,
        lambda prompt, group: exact_logprobs(policy, prompt, group, eos),
        lambda prompt, group: exact_logprobs(reference, prompt, group, eos),
    )
    return tokenizer, policy, reference, prompts, prompt_ids, exact, table


def test_both_estimators_match_the_enumerated_kl(setting):
    tokenizer, policy, reference, prompts, prompt_ids, exact, _ = setting
    copies = 2000
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
    for index in range(len(prompts)):  # per prompt too (one short and one long encoder input per batch)
        sub = [i for i in range(len(bank)) if i % len(prompts) == index]
        ratio = (bank.policy_logps - bank.reference_logps)[sub]
        assert abs(ratio.mean().item() - exact[index]) < 3 * ratio.std().item() / math.sqrt(len(sub))


def test_bank_scores_are_the_exact_sequence_logprobs_and_sampling_is_seeded(setting):
    tokenizer, policy, reference, prompts, prompt_ids, _, table = setting
    draw = dict(max_new_tokens=HORIZON, batch_size=16, progress=False)
    state = torch.random.get_rng_state()
    bank = generate_bank(policy, reference, tokenizer, prompts * 20, prompt_ids * 20, seed=7, **draw)
    again = generate_bank(policy, reference, tokenizer, prompts * 20, prompt_ids * 20, seed=7, **draw)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert bank.policy_ids == again.policy_ids and bank.reference_ids == again.reference_ids
    assert bank.policy_ids != bank.reference_ids
    for i, response in enumerate(bank.policy_ids):
        assert 1 <= len(response) <= HORIZON
        assert tokenizer.eos_token_id not in response[:-1]  # sampling stops at EOS
        log_p, log_q = table[(tuple(bank.prompt_ids[i]), tuple(response))]
        assert bank.policy_logps[i].item() == pytest.approx(log_p, abs=1e-4)
        assert bank.reference_logps[i].item() == pytest.approx(log_q, abs=1e-4)
    same = generate_bank(policy, policy, tokenizer, prompts * 10, prompt_ids * 10, seed=0, **draw)
    assert kl_estimates(same)["kl_seq"] == 0 and kl_estimates(same)["kl_token"] == pytest.approx(0, abs=1e-9)


class LengthJudge(RewardJudge):
    """Prefers the longer response (its reward is the number of characters)."""

    def rewards(self, prompts, responses) -> torch.Tensor:
        return torch.tensor([float(len(r)) for r in responses], dtype=torch.float64)


class Prompts(pl.LightningDataModule):
    """Just the held-out prompts and a tokenizer, which is all the sample bank reads."""

    def __init__(self, tokenizer, prompts):
        super().__init__()
        self.tokenizer, self.eval_prompts = tokenizer, prompts

    def val_dataloader(self):
        return [0]


class Validating(pl.LightningModule):
    def __init__(self, policy, reference):
        super().__init__()
        self.policy, self.reference = policy, reference

    def validation_step(self, batch, index):
        pass


def test_a_t5_policy_logs_kl_and_win_rate(setting, tmp_path):
    tokenizer, policy, reference, prompts, _, exact, _ = setting
    bank = SampleBankCallback(num_prompts=400, max_new_tokens=HORIZON, batch_size=200, seed=5, progress=False)
    callbacks = [bank, KLCallback(), WinRateCallback(LengthJudge())]
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=callbacks, default_root_dir=tmp_path)
    trainer.validate(Validating(policy, reference), datamodule=Prompts(tokenizer, prompts * 200), verbose=False)
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items()}
    target = sum(exact) / len(exact)
    for name in ("kl_seq", "kl_token"):
        assert abs(metrics[f"val/{name}"] - target) < 3 * metrics[f"val/{name}_se"], (name, metrics, target)
    drawn = bank.bank  # the win rate against the reference samples, recomputed by hand from their texts
    wins = [
        1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0
        for a, b in zip(drawn.policy_texts, drawn.reference_texts)
    ]
    assert metrics["val/win_rate"] == pytest.approx(sum(wins) / len(wins), abs=1e-6)
    assert 0 < metrics["val/win_rate"] < 1
    # Each prompt's values, in the bank's prompt order, in the run directory's per_prompt.jsonl.
    (values,) = read_per_prompt(tmp_path).values()
    assert values["win_rate"] == wins
    assert values["kl_token"] == pytest.approx(drawn.token_kl.tolist())
    for name in ("kl_seq", "kl_token", "win_rate"):
        assert sum(values[name]) / len(values[name]) == pytest.approx(metrics[f"val/{name}"], abs=1e-6)


def test_a_lora_t5_and_its_adapters_off_reference_sample_through_peft(setting):
    """The peft wrapper and the adapters-off reference take the decoder's cache under their own names."""
    pytest.importorskip("peft")
    from gpo_lab.models.lora import with_lora
    from gpo_lab.models.reference import AdaptersDisabled

    tokenizer, _, _, prompts, prompt_ids, _, _ = setting
    torch.manual_seed(0)
    policy = with_lora(tokenizer, base="gpo_lab.models.tiny.tiny_seq2seq_lm", r=2, d_model=16, num_layers=1)
    reference = AdaptersDisabled(policy)
    with torch.no_grad():
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.5)  # the adapters now move the policy away from its base model
    bank = generate_bank(policy, reference, tokenizer, prompts * 50, prompt_ids * 50, HORIZON, seed=1, progress=False)
    base = policy.get_base_model()
    for i in range(0, len(bank), 17):  # the scores are the base model's and the adapted model's own
        prompt, response = bank.prompt_ids[i], tuple(bank.policy_ids[i])
        with policy.disable_adapter():
            log_q = exact_logprobs(base, prompt, [response], tokenizer.eos_token_id)[0]
        log_p = exact_logprobs(policy, prompt, [response], tokenizer.eos_token_id)[0]
        assert bank.reference_logps[i].item() == pytest.approx(log_q, abs=1e-4)
        assert bank.policy_logps[i].item() == pytest.approx(log_p, abs=1e-4)
    assert kl_estimates(bank)["kl_token"] > 0.01
