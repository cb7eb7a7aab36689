"""The data module: column mapping, truncation, dropped pairs, chat templates, splits and errors."""

import json
import logging
import random

import datasets
import pytest
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device

from gpo_lab.data.datamodule import DataError, PreferenceDataModule, pad_rows
from gpo_lab.data.sources import load
from gpo_lab.data.tokenization import Truncation, encode_pair, encode_pairs
from gpo_lab.errors import ConfigError
from gpo_lab.models.reference_cache import COLUMN
from gpo_lab.models.tokenizers import byte_tokenizer, word_tokenizer
from gpo_lab.scoring import PackedPairs, PlainPairs, Seq2SeqPairs

WORDS = "p1 p2 p3 p4 p5 good bad fine x".split()


@pytest.fixture
def words():
    return word_tokenizer(WORDS)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prompt_cut_from_the_left_and_responses_from_the_right(words):
    truncation = Truncation(max_length=6, max_prompt_length=3)
    start = (words.bos_token_id, False)
    pair = encode_pair("p1 p2 p3 p4 p5", "good fine good fine", "bad", words, truncation, start)
    assert pair["prompt_ids"] == ids(words, "p3 p4 p5")  # the end of the prompt is kept
    assert pair["chosen_ids"] == ids(words, "good fine good")  # cut to 6 - 3 tokens
    assert pair["rejected_ids"] == ids(words, "bad") + [words.eos_token_id]  # EOS ends a response


def test_empty_response_is_not_a_pair(words):
    truncation = Truncation(max_length=8, max_prompt_length=4)
    assert encode_pair("p1", "", "bad", words, truncation, (words.bos_token_id, False)) is None


def test_empty_prompt_gets_a_start_token(words):
    pair = encode_pair("", "good", "bad", words, Truncation(8, 4), (words.bos_token_id, False))
    assert pair["prompt_ids"] == [words.bos_token_id]


def test_max_prompt_length_must_leave_room():
    with pytest.raises(ConfigError, match="room for a response"):
        Truncation(max_length=16, max_prompt_length=16)


def make_module(rows, tokenizer, **kwargs):
    module = PreferenceDataModule(datasets.Dataset.from_list(rows), tokenizer=tokenizer, **kwargs)
    module.setup("fit")
    return module


def test_dropped_pairs_are_counted_and_logged(words, caplog):
    # distinct prompts, so that the split by prompt may put dropped and kept pairs on either side
    prompts = ["p1 p2", "p2 p3", "p3 p4", "p4 p5", "p5 p1", "p1 p3"]
    rows = [{"prompt": prompt, "chosen": "good", "rejected": "bad"} for prompt in prompts]
    rows += [{"prompt": "p1", "chosen": "", "rejected": "bad"}, {"prompt": "p2", "chosen": "good", "rejected": ""}]
    with caplog.at_level(logging.WARNING):
        module = make_module(rows, words, val_size=2, max_length=8, max_prompt_length=4)
    stats = module.stats
    assert stats["train_pairs"] + stats["validation_pairs"] == 6
    assert stats["train_dropped_empty"] + stats["validation_dropped_empty"] == 2
    assert "dropped" in caplog.text
    for batch in (next(iter(module.train_dataloader())), next(iter(module.val_dataloader()))):
        assert (batch.response_mask.sum(-1) > 0).all()  # no empty response reaches a batch (no NaN)


def test_every_pair_dropped_is_an_error(words):
    rows = [{"prompt": "p1", "chosen": "", "rejected": "bad"}] * 4
    with pytest.raises(DataError, match="Every train pair was dropped"):
        make_module(rows, words, val_size=1, max_length=8, max_prompt_length=4)


def test_column_mapping(words):
    rows = [{"question": "p1 p2", "good_answer": "good", "bad_answer": "bad"}] * 4
    module = make_module(
        rows,
        words,
        val_size=1,
        max_length=8,
        max_prompt_length=4,
        columns={"prompt": "question", "chosen": "good_answer", "rejected": "bad_answer"},
    )
    batch = next(iter(module.train_dataloader()))
    assert batch.input_ids.shape[0] == 2 * 3  # 3 chosen rows then 3 rejected rows
    chosen, rejected = batch.input_ids[0], batch.input_ids[3]
    assert words.decode(chosen[batch.response_mask[0].bool()]) == "good </s>"
    assert words.decode(rejected[batch.response_mask[3].bool()]) == "bad </s>"


@pytest.mark.parametrize(
    "layout, kind",
    [({}, PlainPairs), ({"packing": True}, PackedPairs), ({"seq2seq": True, "packing": True}, Seq2SeqPairs)],
)
def test_each_layout_collates_to_its_typed_batch(words, layout, kind):
    rows = [{"prompt": "p1 p2", "chosen": "good", "rejected": "bad fine"}] * 4
    module = make_module(rows, words, val_size=1, max_length=8, max_prompt_length=4, batch_size=3, **layout)
    pairs = [dict(pair, **{COLUMN: [-1.0 - i, -5.0 - i]}) for i, pair in enumerate(module.train_set)]
    batch = module.collate(pairs)
    assert type(batch) is kind and batch.num_pairs == 3
    assert batch.reference_logps.tolist() == [-1.0, -2.0, -3.0, -5.0, -6.0, -7.0]  # chosen first, then rejected
    assert module.collate(list(module.train_set)).reference_logps is None


def test_lightning_moves_a_typed_batch_whole():
    """Lightning moves any object with ``.to``: every tensor of the batch lands on the device, its type stays."""
    packed = PackedPairs.from_pairs([([1, 2], [3], [4, 5])], pad_id=0, reference_logps=torch.tensor([-1.0, -2.0]))
    plain = PlainPairs.from_pairs([([1, 2], [3], [4, 5])], pad_id=0)
    seq2seq = Seq2SeqPairs.from_pairs([([1, 2], [3], [4, 5])], pad_id=0, eos_id=2)
    for batch in (packed, plain, seq2seq):
        moved = move_data_to_device(batch, torch.device("meta"))
        assert type(moved) is type(batch) and batch.input_ids.device.type == "cpu"
        tensors = [value for value in vars(moved).values() if value is not None]
        assert len(tensors) >= 3 and all(t.device.type == "meta" for t in tensors)
    assert move_data_to_device(plain, "meta").reference_logps is None


def test_pad_rows_are_the_plain_rows_as_keywords():
    rows = [([5, 6], [7]), ([5], [7, 8, 9])]
    batch = PlainPairs.from_rows(rows, pad_id=0, side="left")
    assert {k: v.tolist() for k, v in pad_rows(rows, 0, "left").items()} == {
        "input_ids": batch.input_ids.tolist(),
        "attention_mask": batch.attention_mask.tolist(),
        "response_mask": batch.response_mask.tolist(),
    }


def test_missing_column_is_named_with_the_columns_found(words):
    rows = [{"question": "p1", "chosen": "good", "rejected": "bad"}] * 4
    with pytest.raises(DataError) as error:
        make_module(rows, words)
    message = str(error.value)
    assert "prompt (column 'prompt')" in message and "'question'" in message and "data.columns" in message


def test_non_text_column_is_refused(words):
    rows = [{"prompt": 3, "chosen": "good", "rejected": "bad"}] * 4
    with pytest.raises(DataError, match=r"Row 1: column .prompt. \(prompt\) holds int 3"):
        make_module(rows, words)


def test_conversational_data_uses_the_chat_template():
    tokenizer = byte_tokenizer()
    rows = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "go"}],
        }
    ] * 4
    module = make_module(rows, tokenizer, val_size=1, max_length=64, max_prompt_length=32)
    batch = next(iter(module.train_dataloader()))
    text = tokenizer.decode(batch.input_ids[0][batch.attention_mask[0].bool()])
    response = tokenizer.decode(batch.input_ids[0][batch.response_mask[0].bool()])
    assert text.startswith("<|user|>\nhi\n<|assistant|>\n")
    assert response == "hello\n</s>"


def test_split_and_shuffling_are_deterministic_in_the_seed(words):
    rows = [{"prompt": f"p{i % 5 + 1}", "chosen": "good " * (i % 3 + 1), "rejected": "bad"} for i in range(40)]
    order = lambda seed: [
        b.input_ids.tolist() for b in make_module(rows, words, seed=seed, batch_size=4).train_dataloader()
    ]
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_local_jsonl_file(tmp_path, words):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": "p1", "chosen": "good", "rejected": "bad"}) + "\n" for _ in range(5)))
    data = load(str(path), split="train")
    assert data.column_names == ["prompt", "chosen", "rejected"] and len(data) == 5
    with pytest.raises(DataError, match="does not exist"):
        load(str(tmp_path / "missing.jsonl"))


def test_data_files_from_a_hydra_config(tmp_path):
    from omegaconf import OmegaConf

    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    files = OmegaConf.create({split: str(tmp_path / f"{split}.jsonl") for split in ("train", "validation")})
    data = load("json", data_files=files)
    assert sorted(data) == ["train", "validation"] and len(data["train"]) == 1


def test_batched_encoding_equals_text_by_text(words):
    """The one-call-per-column encoding gives each pair the ids of tokenizing its texts one by one."""
    rng = random.Random(0)
    vocabulary = ["p1", "p2", "p3", "good", "fine", "bad"]

    def text():
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 7)))

    triples = [(text(), text(), text()) for _ in range(300)]
    truncation, start = Truncation(max_length=9, max_prompt_length=4), (words.bos_token_id, False)
    batched = encode_pairs(*(list(column) for column in zip(*triples)), words, truncation, start)
    for (prompt, chosen, rejected), pair in zip(triples, batched):
        if not chosen or not rejected:
            assert pair is None
            continue
        prompt_ids = (ids(words, prompt) or [words.bos_token_id])[-4:]
        assert pair == {
            "prompt_ids": prompt_ids,
            "chosen_ids": (ids(words, chosen) + [words.eos_token_id])[: 9 - len(prompt_ids)],
            "rejected_ids": (ids(words, rejected) + [words.eos_token_id])[: 9 - len(prompt_ids)],
        }
    assert sum(pair is None for pair in batched) > 10 and sum(pair is not None for pair in batched) > 100


@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_of_lists_pad_like_rows_of_tensors(side):
    """The one-call path for the data loader's list rows builds the tensors the row-by-row path builds."""
    rng = random.Random(1)
    rows = [
        ([rng.randrange(9) for _ in range(rng.randint(0, 6))], [rng.randrange(9) for _ in range(rng.randint(0, 9))])
        for _ in range(40)
    ] + [([1, 2], [3])]
    from_lists = PlainPairs.from_rows(rows, 0, side)
    from_tensors = PlainPairs.from_rows(
        [(torch.tensor(p, dtype=torch.long), torch.tensor(r)) for p, r in rows], 0, side
    )
    for name in ("input_ids", "attention_mask", "response_mask"):
        assert torch.equal(getattr(from_lists, name), getattr(from_tensors, name)), name
    width = from_lists.input_ids.shape[1]
    by_hand = [1, 2, 3] + [0] * (width - 3) if side == "right" else [0] * (width - 3) + [1, 2, 3]
    assert from_lists.input_ids[-1].tolist() == by_hand  # the row ([1, 2], [3]), padded with 0
    assert from_lists.response_mask[-1].tolist() == [int(i == 3) for i in by_hand]
