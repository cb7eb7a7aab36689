"""The reference log-prob cache: right values, computed once, shared by concurrent jobs, never stale."""

import copy
import json
import multiprocessing
import time
from pathlib import Path

import datasets
import pytest
import torch

from gpo_lab.data.columns import batch_reference_logps
from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.data.tokenization import Truncation
from gpo_lab.data.toy import arithmetic_preferences
from gpo_lab.models.batch_dependence import BATCH_ROUNDINGS, batch_dependence
from gpo_lab.models.fingerprints import cache_spec, weights_fingerprint
from gpo_lab.models.reference import LazyReference
from gpo_lab.models.reference_cache import COLUMN, ReferenceLogpCache, attach_reference_logps, default_cache_dir
from gpo_lab.models.reference_logps import compute_reference_logps
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer, word_tokenizer
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.store.cache import spec_key

PAIRS = datasets.Dataset.from_dict(
    {
        "prompt_ids": [[1, 5, 9, 11, 12, 13], [1, 7], [1, 2, 3]],
        "chosen_ids": [[20, 21, 22], [30, 31, 32, 33, 34], [4]],
        "rejected_ids": [[30, 31], [40], [5, 6, 7, 8, 9, 10]],
    }
)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return tiny_causal_lm(byte_tokenizer(), hidden_size=32, num_layers=2, num_heads=2).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def key_of(reference, pairs=PAIRS, tokenizer=None, truncation=Truncation(64, 32)):
    return spec_key(cache_spec(weights_fingerprint(reference), pairs, tokenizer or byte_tokenizer(), truncation))


# ----------------------------------------------------------------------------------- the key
def test_key_is_the_same_for_equal_inputs(model):
    same_data = datasets.Dataset.from_dict(PAIRS.to_dict())
    assert key_of(model) == key_of(copy.deepcopy(model), same_data, byte_tokenizer(), Truncation(64, 32))


def test_key_changes_with_anything_that_determines_the_values(model):
    base = key_of(model)
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        nudged.model.layers[1].mlp.up_proj.weight[3, 4] += 1e-6  # one weight, barely moved
    assert key_of(nudged) != base
    assert key_of(copy.deepcopy(model).to(torch.bfloat16)) != base

    rows = PAIRS.to_dict()
    rows["rejected_ids"][2] = [5, 6, 7, 8, 9, 11]  # one token id
    assert key_of(model, datasets.Dataset.from_dict(rows)) != base
    rows = PAIRS.to_dict()
    rows["prompt_ids"][0], rows["chosen_ids"][0] = [1, 5, 9, 11, 12], [13, 20, 21, 22]  # same row, new boundary
    assert key_of(model, datasets.Dataset.from_dict(rows)) != base
    assert key_of(model, PAIRS.select([0, 1])) != base

    assert key_of(model, tokenizer=word_tokenizer(["a", "b"])) != base
    assert key_of(model, tokenizer=word_tokenizer(["a", "c"])) != key_of(model, tokenizer=word_tokenizer(["a", "b"]))
    assert key_of(model, truncation=Truncation(65, 32)) != base
    assert key_of(model, truncation=Truncation(64, None)) != base


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GPO_LAB_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "reference_logps"
    monkeypatch.delenv("GPO_LAB_CACHE")
    assert default_cache_dir() == Path(".cache/gpo_lab/reference_logps")


# ----------------------------------------------------------------------------------- the store
SPEC = {"format": 1, "reference": "r", "pairs": "p", "num_pairs": 3, "tokenizer": "t", "truncation": {}}
VALUES = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])


def test_computed_once_then_read(tmp_path):
    cache, calls = ReferenceLogpCache(tmp_path), []

    def compute():
        calls.append(1)
        return VALUES

    first, computed_first = cache.get_or_compute(SPEC, compute)
    second, computed_second = ReferenceLogpCache(tmp_path).get_or_compute(SPEC, compute)
    assert (computed_first, computed_second, len(calls)) == (True, False, 1)
    assert torch.equal(first, VALUES) and torch.equal(second, VALUES)
    _, computed_other = cache.get_or_compute({**SPEC, "reference": "other"}, compute)
    assert computed_other and len(calls) == 2


def test_a_failed_computation_leaves_nothing_and_partial_files_are_never_read(tmp_path):
    cache = ReferenceLogpCache(tmp_path)
    key = spec_key(SPEC)
    entry = cache.path(key).parent
    leftover = tmp_path / f".{entry.name}.abc.tmp"  # what a killed writer leaves behind
    leftover.mkdir(parents=True)
    (leftover / cache.path(key).name).write_bytes(b"half a file")

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(SPEC, crash)
    assert cache.load(key) is None and not cache.path(key).exists()
    assert len(list(tmp_path.glob("*.tmp"))) == 1  # only the old leftover; this writer cleaned up after itself
    values, computed = cache.get_or_compute(SPEC, lambda: VALUES)
    assert computed and torch.equal(values, VALUES)


def test_a_result_of_the_wrong_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        ReferenceLogpCache(tmp_path).get_or_compute(SPEC, lambda: VALUES[:2])
    assert not any(tmp_path.rglob("*.safetensors")) and not any(p.is_dir() for p in tmp_path.iterdir())


def _job(root, log_path, barrier, results):
    barrier.wait()  # every job asks at the same moment

    def compute():
        with open(log_path, "a") as log:
            log.write("computed\n")
        time.sleep(1.0)
        return VALUES

    values, computed = ReferenceLogpCache(root).get_or_compute(SPEC, compute)
    results.put((values.tolist(), computed))


def test_jobs_starting_together_compute_once(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    log_path = tmp_path / "log"
    jobs = [context.Process(target=_job, args=(tmp_path / "cache", log_path, barrier, results)) for _ in range(4)]
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
    assert log_path.read_text().count("computed") == 1
    assert sorted(computed for _, computed in outcomes) == [False, False, False, True]
    assert all(values == VALUES.tolist() for values, _ in outcomes)


# ----------------------------------------------------------------------------------- values
def test_computed_values_are_the_plain_sequence_logprobs_in_dataset_order(model):
    values = compute_reference_logps(model, PAIRS, pad_id=0, batch_size=2)  # batches longest first, out of order
    with torch.no_grad():
        for i, pair in enumerate(PAIRS):
            rows = [(pair["prompt_ids"], pair["chosen_ids"]), (pair["prompt_ids"], pair["rejected_ids"])]
            expected = PlainPairs.from_rows(rows, pad_id=0).score(model)
            torch.testing.assert_close(values[i], expected, rtol=1e-5, atol=1e-5)


def test_batch_values_come_chosen_first_then_rejected():
    pairs = [{COLUMN: [-1.0, -2.0]}, {COLUMN: [-3.0, -4.0]}]
    assert batch_reference_logps(pairs).tolist() == [-1.0, -3.0, -2.0, -4.0]


def datamodule():
    module = PreferenceDataModule(
        arithmetic_preferences(num_pairs=24, seed=0),
        max_length=48,
        max_prompt_length=24,
        batch_size=4,
        val_size=0.25,
        tokenizer=byte_tokenizer(),
        packing=True,
    )
    module.setup("fit")
    return module


def test_attached_values_reach_the_batches_and_a_second_job_reuses_them(tmp_path, model):
    first = datamodule()
    assert attach_reference_logps(first, model, ReferenceLogpCache(tmp_path)) == {
        "train": "computed",
        "validation": "computed",
    }
    assert first.stats["reference_logps_train"] == "computed"
    with torch.no_grad():
        for pair in first.train_set.select(range(3)):
            rows = [(pair["prompt_ids"], pair["chosen_ids"]), (pair["prompt_ids"], pair["rejected_ids"])]
            torch.testing.assert_close(
                torch.tensor(pair[COLUMN]), PlainPairs.from_rows(rows, 0).score(model), rtol=1e-5, atol=1e-5
            )
    batch = next(iter(first.train_dataloader()))
    assert isinstance(batch, PackedPairs) and batch.reference_logps.shape == (8,)

    second = datamodule()  # another job of the sweep: same reference weights and data
    assert attach_reference_logps(second, copy.deepcopy(model), ReferenceLogpCache(tmp_path)) == {
        "train": "cached",
        "validation": "cached",
    }
    assert second.train_set[COLUMN] == first.train_set[COLUMN]
    other = datamodule()  # another reference: never the cached values
    assert attach_reference_logps(other, tiny_model(seed=1), ReferenceLogpCache(tmp_path))["train"] == "computed"
    assert other.train_set[COLUMN] != first.train_set[COLUMN]


# ----------------------------------------------------------------------------------- batch dependence
def smoke_model(attention):
    """The smoke run's policy (a Llama of width 64, 2 layers, 4 heads), with ``attention``."""
    torch.manual_seed(0)
    return tiny_causal_lm(byte_tokenizer(), attn_implementation=attention).eval()


def roundings(values, truth):
    """How far ``values`` are from ``truth``, in float32 roundings of ``truth`` (eps times its magnitude)."""
    truth = truth.double()
    return ((values.double() - truth).abs() / (torch.finfo(torch.float32).eps * truth.abs().clamp_min(1))).max().item()


@pytest.mark.parametrize("packing", [True, False])
def test_a_reference_whose_scores_follow_the_batch_width_is_refused(packing):
    """A stand-in for a batch-dependent kernel: the embeddings move by 1e-4 per padded column. In float32."""
    pairs, model = datamodule().train_set, smoke_model("eager")
    assert batch_dependence(model, pairs, 0, packing) is None
    model.get_input_embeddings().register_forward_hook(lambda module, args, out: out + 1e-4 * out.shape[1])
    why = batch_dependence(model, pairs, 0, packing)
    assert why is not None and why.startswith("the reference's log-probs depend on what a pair is batched with")
    assert "attention eager, weights float32, device cpu" in why
    alone = compute_reference_logps(model, pairs, 0, batch_size=1, packing=packing)
    assert roundings(compute_reference_logps(model, pairs, 0, batch_size=16, packing=packing), alone) > BATCH_ROUNDINGS


@pytest.mark.parametrize(
    "attention, precision, invariant",
    [
        ("sdpa", "32-true", True),
        ("eager", "bf16-mixed", True),
        ("eager", "32-true", True),
        ("sdpa", "bf16-mixed", False),
    ],
)
def test_the_batch_check_says_what_the_cpu_kernels_do(attention, precision, invariant):
    """On CPU, float32 and eager bf16 scores do not depend on the batch; sdpa's bf16 kernel rounds with the padding.

    The verdict is compared with the model's own scores of every pair, alone and in the cache's batches of 16.
    """
    pairs, model = datamodule().train_set, smoke_model(attention)
    why = batch_dependence(model, pairs, 0, packing=True, precision=precision)
    alone = compute_reference_logps(model, pairs, 0, batch_size=1, precision=precision)
    batched = compute_reference_logps(model, pairs, 0, batch_size=len(pairs), precision=precision)
    assert (why is None) == invariant, why
    assert (roundings(batched, alone) <= BATCH_ROUNDINGS) == invariant
    if not invariant:
        assert "autocast bfloat16" in why


# ----------------------------------------------------------------------------------- the reference when cached
def test_lazy_reference_builds_only_when_used(model):
    builds = []

    def build():
        builds.append(1)
        return copy.deepcopy(model).train()

    lazy = LazyReference(build, fingerprint=weights_fingerprint(model))
    holder = torch.nn.Module()
    holder.reference = lazy
    holder.to(torch.float64).to(torch.float32)  # what Lightning does when it moves the module: nothing to move yet
    assert not builds and not lazy.is_loaded and holder.state_dict() == {}
    assert lazy.config.vocab_size == model.config.vocab_size  # first use builds it
    assert builds == [1] and not lazy.training
    assert all(not p.requires_grad for p in lazy.parameters())
    rows = PlainPairs.from_rows([([1, 2, 3], [4, 5])], pad_id=0)
    torch.testing.assert_close(rows.score(lazy), rows.score(model))
    assert builds == [1]


def test_lazy_reference_refuses_other_weights(model):
    lazy = LazyReference(lambda: tiny_model(seed=1), fingerprint=weights_fingerprint(model))
    with pytest.raises(RuntimeError, match="differs"):
        _ = lazy.config  # first use builds the model and checks it


# ----------------------------------------------------------------------------------- in a sweep
@pytest.mark.slow
def test_the_jobs_of_a_sweep_compute_the_reference_logps_once(tmp_path):
    from tests.helpers import ROOT
    from tests.helpers.cli import run_cli

    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    env = {"GPO_LAB_CACHE": str(cache)}
    result = run_cli(
        [
            "-m",
            "+experiment=smoke",
            "loss=logistic,hinge,squared",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(path.read_text()) for path in sorted(sweep.rglob("summary.json"))]
    assert len(summaries) == 3 and all(s["status"] == "completed" for s in summaries)
    for split in ("train", "validation"):
        assert sorted(s["data"][f"reference_logps_{split}"] for s in summaries) == ["cached", "cached", "computed"]
    assert len(list(cache.rglob("*.safetensors"))) == 2  # one entry per split, shared by the three jobs
    # A later sweep on the same data reuses them too.
    again = run_cli(
        ["+experiment=smoke", "loss=savage", "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'later'}"],
        cwd=ROOT,
        env=env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "later" / "summary.json").read_text())["data"]["reference_logps_train"] == "cached"
