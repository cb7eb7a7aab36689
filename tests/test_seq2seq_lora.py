"""Other model kinds through the same GPOModule: an encoder-decoder (T5) and a LoRA policy whose
reference is its own base model with the adapters disabled."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.tiny import tiny_seq2seq_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.scoring.logprobs import sequence_logprobs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs
from tests.helpers.runs import compose_config, run_training

peft = pytest.importorskip("peft", reason="LoRA needs peft (pip install 'gpo_lab[lora]')")

QUICK = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.batch_size=4",
    "optim.lr=1e-3",
    "callbacks.progress=null",
]


def first_metrics(run_dir):
    with open(run_dir / "metrics.jsonl") as handle:
        return json.loads(handle.readline())


# ----------------------------------------------------------------------------- encoder-decoder
def test_seq2seq_rows_pad_prompt_and_response_apart():
    batch = Seq2SeqPairs.from_rows([([5, 6, 7], [8, 2]), ([5], [9, 9, 9, 2])], pad_id=0, eos_id=2)
    assert batch.input_ids.tolist() == [[5, 6, 7, 2], [5, 2, 0, 0]]  # EOS ends the encoder input
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.response_ids.tolist() == [[8, 2, 0, 0], [9, 9, 9, 2]]
    assert batch.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    pairs = Seq2SeqPairs.from_pairs([([5, 6, 7], [8, 2], [9, 2])], pad_id=0, eos_id=2)
    assert pairs.response_ids.tolist() == [[8, 2], [9, 2]] and pairs.num_pairs == 1  # chosen row, then rejected


def test_seq2seq_logprobs_equal_a_token_by_token_decode():
    """Summed log pi(y|x) of a padded batch equals the chain rule computed one token at a time."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    model = tiny_seq2seq_lm(tokenizer).eval()
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rows = [
        (encode("What is 2 plus 3?"), encode(" 5.") + [tokenizer.eos_token_id]),
        (encode("Hi"), encode(" Hello there") + [tokenizer.eos_token_id]),
    ]
    batch = Seq2SeqPairs.from_rows(rows, tokenizer.pad_token_id, tokenizer.eos_token_id)
    with torch.no_grad():
        batched = batch.score(model)
        for i, (prompt, response) in enumerate(rows):
            encoder_input = torch.tensor([prompt + [tokenizer.eos_token_id]])
            total, decoded = 0.0, [model.config.decoder_start_token_id]
            for token in response:
                logits = model(input_ids=encoder_input, decoder_input_ids=torch.tensor([decoded])).logits[0, -1]
                total += torch.log_softmax(logits.double(), -1)[token].item()
                decoded.append(token)
            assert batched[i].item() == pytest.approx(total, abs=1e-4)


@pytest.mark.slow
def test_tiny_t5_trains_and_evaluates_through_the_module(tmp_path):
    summary = run_training(["model=tiny_t5", *QUICK], tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["data"]["reference_logps"].startswith("not used: the reference cache scores causal rows")
    assert first_metrics(tmp_path)["train/loss"] == pytest.approx(math.log(2), abs=1e-6)  # pi = pi_ref at step 0
    final = summary["final"]
    assert final["val/loss"] < math.log(2) and final["val/rho_mean"] > 0  # two steps already moved rho up
    assert "val/offline_reg" in final


# ----------------------------------------------------------------------------- LoRA
def build(overrides, tmp_path):
    cfg = compose_config(["model=tiny_lora", "reference=adapters_disabled", *QUICK, *overrides], tmp_path)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    pl.seed_everything(0)
    from gpo_lab.tasks.language import build_language_task

    return build_language_task(plain, GPOLoss("logistic"), 0.1)


def test_lora_reference_is_the_base_model_without_a_second_copy(tmp_path):
    module, datamodule = build(["reference_cache.enabled=false", "data.packing=false"], tmp_path)
    policy, reference = module.policy, module.reference

    # no second copy: the reference owns no parameters and shares every base weight with the policy
    assert list(reference.named_parameters()) == [] and reference.state_dict() == {}
    assert {p.data_ptr() for p in reference.parameters()} == {p.data_ptr() for p in policy.parameters()}
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in policy.parameters())
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)

    # before training the adapters add exactly zero (LoRA's B starts at 0): these are the base model's log-probs
    batch = next(iter(datamodule.val_dataloader()))
    inputs = {k: getattr(batch, k) for k in ("input_ids", "attention_mask", "response_mask")}
    with torch.no_grad():
        base_logps = sequence_logprobs(policy, **inputs)
    frozen = {name: p.detach().clone() for name, p in policy.named_parameters() if name not in trainable}

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)

    assert all(torch.equal(p, frozen[name]) for name, p in policy.named_parameters() if name in frozen)
    with torch.no_grad():
        assert torch.equal(sequence_logprobs(reference, **inputs), base_logps)  # adapters off = base model
        assert not torch.allclose(sequence_logprobs(policy, **inputs), base_logps)  # the adapters trained
    module.train()
    reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert policy.training and not reference.training  # reading the reference leaves the policy's mode alone


def test_lora_reference_with_the_reference_cache(tmp_path):
    """The cache fingerprints the base weights, and loading the lazy reference (as an evaluation
    does) freezes nothing of the policy."""
    from gpo_lab.models.fingerprints import weights_fingerprint

    module, datamodule = build(["reference_cache.enabled=true"], tmp_path)
    assert "reference_logps" in datamodule.train_set.column_names
    reference = module.reference.loaded  # what an evaluation that samples does
    assert type(reference).__name__ == "AdaptersDisabled"
    trainable = [p for name, p in module.policy.named_parameters() if "lora_" in name]
    assert trainable and all(p.requires_grad for p in trainable)

    before = weights_fingerprint(reference)
    with torch.no_grad():
        trainable[0].add_(1.0)  # an adapter changes: pi_ref does not
    assert weights_fingerprint(reference) == before
    base = next(p for name, p in module.policy.named_parameters() if "lora_" not in name)
    with torch.no_grad():
        base.add_(1.0)  # a base weight changes: pi_ref does
    assert weights_fingerprint(reference) != before


@pytest.mark.slow
def test_lora_trains_and_evaluates_through_the_module(tmp_path):
    summary = run_training(["model=tiny_lora", "reference=adapters_disabled", *QUICK], tmp_path)
    assert summary["status"] == "completed"
    assert first_metrics(tmp_path)["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["final"]["val/rho_mean"] > 0
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(key.startswith("reference.") for key in checkpoint["state_dict"])


def test_frozen_copy_of_a_lora_policy_is_its_base_model(tmp_path):
    """reference=copy with a LoRA policy does not copy it: it reads the base model too."""
    module, _ = build(["reference=copy", "reference_cache.enabled=false"], tmp_path)
    assert type(module.reference).__name__ == "AdaptersDisabled"
    assert list(module.reference.named_parameters()) == []


def test_adapters_disabled_needs_a_lora_policy():
    from gpo_lab.errors import ConfigError
    from gpo_lab.models.reference import adapters_disabled

    with pytest.raises(ConfigError, match="needs a LoRA policy"):
        adapters_disabled(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_lora_on_an_encoder_decoder(tmp_path):
    summary = run_training(
        [
            "model=tiny_t5",
            "model.policy._target_=gpo_lab.models.lora.with_lora",
            "+model.policy.base=gpo_lab.models.tiny.tiny_seq2seq_lm",
            "+model.policy.r=4",
            "reference=adapters_disabled",
            *QUICK,
        ],
        tmp_path,
    )
    assert summary["status"] == "completed"
    assert first_metrics(tmp_path)["train/loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_lora_hyperparameters_are_checked():
    from gpo_lab.errors import ConfigError
    from gpo_lab.models.lora import with_lora

    with pytest.raises(ConfigError, match="r >= 1"):
        with_lora(byte_tokenizer(), base="gpo_lab.models.tiny.tiny_causal_lm", r=0)
