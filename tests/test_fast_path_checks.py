"""The start-up checks of the scoring fast paths, on the cases that were wrong before them: a model that scales
its logits (Granite), a sliding window longer than a short probe (Mistral), a check made on one device reused on
another, the reference cache's layout, key and precision (``bf16-mixed`` starts at exactly f(0), sdpa included)."""

import json
import math

import datasets
import pytest
import torch
import transformers

from gpo_lab.data.tokenization import Truncation
from gpo_lab.eval import kl_estimates
from gpo_lab.eval.sampling import encode_prompts, generate_bank
from gpo_lab.models.fingerprints import cache_spec
from gpo_lab.models.reference import freeze
from gpo_lab.models.reference_logps import compute_reference_logps
from gpo_lab.models.tokenizers import byte_tokenizer, word_tokenizer
from gpo_lab.scoring import fast_path_checks
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.fast_path_report import accelerator, check_fast_paths
from gpo_lab.scoring.logprobs import projects_hidden_states_linearly
from gpo_lab.scoring.packing import PackedPairs, supports_prefix_sharing
from gpo_lab.store.cache import spec_key
from tests.helpers.exact_kl import every_response
from tests.helpers.families import build
from tests.test_kl import HORIZON, exact_logprobs


def by_hand(model, rows) -> torch.Tensor:
    """log pi(y|x) of each (prompt, response) row alone, from ``model(...).logits`` and a log_softmax."""
    values = []
    for prompt, response in rows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(prompt) + list(response)])).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1]
        values.append(log_probs.gather(-1, torch.tensor(response)[:, None]).sum().item())
    return torch.tensor(values, dtype=torch.float64)


def tiny_granite(tokenizer, seed: int):
    """A Granite whose output layer's logits are divided by 8 (``logits_scaling``), peaked enough for a real KL."""
    torch.manual_seed(seed)
    config = transformers.GraniteConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        logits_scaling=8.0,
        tie_word_embeddings=False,
    )
    model = transformers.GraniteForCausalLM(config)
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=1.0)
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    return freeze(model)


def test_granite_gives_the_true_logprob_and_kl_estimators_that_agree_with_the_exact_kl():
    tokenizer = word_tokenizer(["a", "b"])
    policy, reference = tiny_granite(tokenizer, 0), tiny_granite(tokenizer, 1)
    prompts = ["a", "b a"]
    prompt_ids = encode_prompts(tokenizer, prompts)
    response = (4, 5, 4)
    truth = exact_logprobs(policy, prompt_ids[0], [response])[0]
    assert PlainPairs.from_rows([(prompt_ids[0], list(response))], 0).score(policy).item() == pytest.approx(
        truth, abs=1e-4
    )
    assert not projects_hidden_states_linearly(policy)  # the check saw the scaling; no list named Granite
    assert "projected log-probs differ" in next(iter(fast_path_checks.report(policy).values()))

    exact = []
    for prompt in prompt_ids:
        responses = list(every_response(len(tokenizer), tokenizer.eos_token_id, HORIZON))
        groups = [[r for r in responses if len(r) == n] for n in range(1, HORIZON + 1)]  # one forward per length
        p, q = (
            torch.tensor([v for group in groups for v in exact_logprobs(model, prompt, group)], dtype=torch.float64)
            for model in (policy, reference)
        )
        assert p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
        exact.append((p.exp() * (p - q)).sum().item())
    target = sum(exact) / len(exact)
    copies = 1500
    bank = generate_bank(
        policy, reference, tokenizer, prompts * copies, prompt_ids * copies, HORIZON, seed=123, batch_size=1000,
        progress=False,
    )  # fmt: skip
    estimates = kl_estimates(bank)
    assert 0.05 < target < 5
    for name in ("kl_seq", "kl_token"):
        assert abs(estimates[name] - target) < 3 * estimates[f"{name}_se"], (name, estimates, target)


def test_a_sliding_window_longer_than_a_short_probe_falls_back_to_plain_rows():
    model = build("mistral_sliding_window")  # sliding_window=20
    generator = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 48, (n,), generator=generator).tolist() for n in (19, 14, 16)]
    packed = PackedPairs.from_pairs([tuple(ids)], pad_id=0)
    truth = by_hand(model, [(ids[0], ids[1]), (ids[0], ids[2])])
    with torch.no_grad():
        wrong = packed.score_shared(model).double()
        assert (wrong - truth).abs().max() > 1e-3  # what the 4D mask gives on rows longer than the window
        assert not supports_prefix_sharing(model)
        torch.testing.assert_close(packed.score(model).double(), truth, atol=1e-4, rtol=0)
    assert fast_path_checks.probe_span(model) > model.config.sliding_window


def test_the_cache_key_has_the_attention_the_precision_the_layout_and_the_code_version():
    pairs = datasets.Dataset.from_dict({"prompt_ids": [[1, 2]], "chosen_ids": [[3]], "rejected_ids": [[4]]})
    args = ("weights", pairs, byte_tokenizer(), Truncation(64, 32))
    base = cache_spec(*args, attention="sdpa", precision="32-true", packing=True)
    assert base["scoring"] == fast_path_checks.SCORING_VERSION
    variants = [
        cache_spec(*args, attention="eager", precision="32-true", packing=True),
        cache_spec(*args, attention="sdpa", precision="bf16-mixed", packing=True),
        cache_spec(*args, attention="sdpa", precision="32-true", packing=False),
    ]
    keys = {spec_key(spec) for spec in [base, *variants]}
    assert len(keys) == 4


class MaskRecorder:
    """The number of dimensions of every attention mask the model and its decoder are called with."""

    def __init__(self, model):
        self.dims = []
        for module in (model, model.get_decoder()):
            module.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.dims.append(kwargs["attention_mask"].dim())


def test_the_reference_cache_honours_packing_false():
    pairs = {"prompt_ids": [[1, 5, 9], [1, 7]], "chosen_ids": [[20, 21], [30, 31, 32]], "rejected_ids": [[30], [4, 4]]}
    expected = by_hand(build("llama"), [(p, c) for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"])])
    results = {}
    for packing in (False, True):
        model = build("llama")
        recorder = MaskRecorder(model)
        results[packing] = compute_reference_logps(model, pairs, pad_id=0, batch_size=2, packing=packing)
        assert (4 in recorder.dims) == packing, recorder.dims  # plain rows never take the 4D mask (nor its probe)
        torch.testing.assert_close(results[packing][:, 0].double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(results[False], results[True], atol=1e-4, rtol=0)


def test_the_reference_cache_under_a_true_precision_scores_cast_weights_and_leaves_the_reference_alone():
    pairs = {"prompt_ids": [[1, 5, 9], [1, 7]], "chosen_ids": [[20, 21], [30, 31, 32]], "rejected_ids": [[30], [4, 4]]}
    model = build("llama")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    values = compute_reference_logps(model, pairs, pad_id=0, packing=False, precision="bf16-true")
    cast = build("llama").to(torch.bfloat16)
    rows = [
        (p, r) for responses in ("chosen_ids", "rejected_ids") for p, r in zip(pairs["prompt_ids"], pairs[responses])
    ]
    expected = by_hand(cast, rows).float().view(2, -1).T
    torch.testing.assert_close(values, expected, atol=5e-2, rtol=0)  # bf16 weights, float64 by hand
    triples = list(zip(pairs["prompt_ids"], pairs["chosen_ids"], pairs["rejected_ids"]))
    with torch.no_grad():
        on_cast_weights = PlainPairs.from_pairs(triples, pad_id=0).score(cast).view(2, -1).T
    assert torch.equal(values, on_cast_weights)  # the numbers a bf16-true policy of the same weights gives
    assert not torch.equal(values, compute_reference_logps(model, pairs, pad_id=0, packing=False))
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_the_start_up_report_says_which_path_is_on_and_why_one_is_off():
    device = accelerator(torch.device("cpu")).type  # where the start-up checks run
    report = check_fast_paths(build("granite"), "32-true")
    assert report[f"prefix_sharing [attention sdpa, weights float32, device {device}]"] == "on"
    assert report[f"response_projection [attention sdpa, weights float32, device {device}]"].startswith(
        "off: projected log-probs differ"
    )
    mixed = check_fast_paths(build("llama"), "bf16-mixed")
    assert mixed[f"response_projection [attention sdpa, weights float32, autocast bfloat16, device {device}]"] == "on"


def test_a_check_made_on_one_device_is_made_again_on_another():
    """Another device runs other kernels: a result measured on the CPU is not reused after the model moves."""
    model = build("llama")
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(next(module.parameters()).device.type))
    assert supports_prefix_sharing(model)
    checked_on_cpu = len(forwards)
    assert checked_on_cpu > 0 and set(forwards) == {"cpu"}
    assert supports_prefix_sharing(model) and len(forwards) == checked_on_cpu  # same device: the result is reused
    model.to("meta")  # another device, whose tensors have no values: the check runs again there, and fails
    assert not supports_prefix_sharing(model)
    report = fast_path_checks.report(model)
    assert report["prefix_sharing [attention sdpa, weights float32, device cpu]"] == "on"
    assert report["prefix_sharing [attention sdpa, weights float32, device meta]"].startswith("off: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "attention, precision, cached",
    [("eager", "bf16-mixed", True), ("sdpa", "bf16-mixed", False), ("sdpa", "32-true", True)],
)
def test_the_reference_cache_starts_at_exactly_f_of_zero(tmp_path, attention, precision, cached):
    """With the cache enabled, rho is 0 at step 0 and the loss is log 2, in float32 to its last bit.

    The cache is computed under the policy's precision, and used only where the reference's scores do not
    depend on the batch: eager attention and float32 on these CPUs. sdpa's bf16 kernel rounds differently with
    the batch's padding (a pair's values batched differently were up to 3e-3 nats apart), so there the start-up
    check refuses the cache and the reference is scored in the training batch, next to the policy.
    """
    from tests.helpers.runs import run_training

    overrides = [
        "+experiment=smoke",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        f"trainer.precision={precision}",
        f"model.policy.attn_implementation={attention}",
        f"reference_cache.dir={tmp_path / 'cache'}",
    ]
    summary = run_training(overrides, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if "train/loss" in r)
    assert first["step"] == 0
    assert first["train/loss"] == pytest.approx(torch.tensor(math.log(2.0), dtype=torch.float32).item(), abs=1e-7)
    assert first["train/rho_mean"] == 0.0
    data = summary["data"]
    if cached:
        assert (data["reference_logps_train"], "reference_logps" in data) == ("computed", False)
    else:
        assert "reference_logps_train" not in data
        assert data["reference_logps"].startswith("not used: the reference's log-probs depend on what a pair is")
        assert "attention sdpa, weights float32, autocast bfloat16" in data["reference_logps"]
    paths = data["fast_paths"]["policy"]
    device = accelerator(torch.device("cpu")).type
    autocast = ", autocast bfloat16" if precision == "bf16-mixed" else ""
    assert paths[f"prefix_sharing [attention {attention}, weights float32{autocast}, device {device}]"] == "on"
