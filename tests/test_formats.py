"""Published preference schemas onto prompt/chosen/rejected, through the same loader as the hub.

Every fixture is written by hand to local files laid out like the hub repositories (parquet shards,
gzipped JSON Lines), then read by the data configs themselves with only the path changed, so the
code path is the hub's: ``datasets.load_dataset`` on a repository layout, then the adapter.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest
from hydra.utils import instantiate

from gpo_lab.data.formats import convert, detect_schema, load
from gpo_lab.data.preference_schemas import split_transcripts
from gpo_lab.data.sources import DataError
from gpo_lab.models.tokenizers import byte_tokenizer
from tests.helpers.runs import compose_config

POST = "My cat knocks cups off the table.\n\nWhat should I do?"
TLDR_PROMPT = (
    "SUBREDDIT: r/pets\n\nTITLE: Cat keeps breaking cups\n\nPOST: My cat knocks cups off the table."
    "\n\nWhat should I do?\n\nTL;DR:"
)
DOG_PROMPT = "SUBREDDIT: r/dogs\n\nTITLE: Walks\n\nPOST: How long should a walk be?\n\nTL;DR:"


def reddit_info(post, title, subreddit):
    return {"id": "t3_x", "post": post, "title": title, "subreddit": subreddit, "site": None, "article": None}


# The raw comparisons as OpenAI released them (the summaries start with a space).
TLDR_RAW = [
    {
        "info": reddit_info(POST, "Cat keeps breaking cups", "pets"),
        "summaries": [
            {"text": " Cat breaks cups, help.", "policy": "sup2", "note": None},
            {"text": " cat bad", "policy": "ref", "note": None},
        ],
        "choice": 0,
        "worker": "w1",
        "batch": "batch3",
        "split": "train",
        "extra": {"confidence": 8},
    },
    {
        "info": reddit_info("How long should a walk be?", "Walks", "dogs"),
        "summaries": [
            {"text": " walks?", "policy": "ref", "note": None},
            {"text": "How long to walk my dog? ", "policy": "sup2", "note": None},
        ],
        "choice": 1,
        "worker": "w2",
        "batch": "batch4",
        "split": "train",
        "extra": {"confidence": 5},
    },
]
CNNDM_ROW = {
    "info": {
        "id": "cnn1",
        "post": None,
        "title": "Storm",
        "subreddit": None,
        "site": "cnn",
        "article": "A storm hit the coast.",
    },
    "summaries": [
        {"text": " A storm.", "policy": "ref", "note": None},
        {"text": " Weather news.", "policy": "sup2", "note": None},
    ],
    "choice": 0,
    "worker": "w3",
    "batch": "cnndm0",
    "split": "valid2",
    "extra": {"confidence": 3},
}
# The same pairs in the prompt/chosen/rejected form of trl-lib/tldr-preference.
TLDR_PAIRS = [
    {"prompt": TLDR_PROMPT, "chosen": " Cat breaks cups, help.", "rejected": " cat bad"},
    {"prompt": DOG_PROMPT, "chosen": " How long to walk my dog?", "rejected": " walks?"},
]


# The features of the hub's comparisons (every split has them all, CNN/DM fields included).
TEXT = datasets.Value("string")
COMPARISON_FEATURES = datasets.Features(
    {
        "info": {key: TEXT for key in ("id", "post", "title", "subreddit", "site", "article")},
        "summaries": [{"text": TEXT, "policy": TEXT, "note": TEXT}],
        "choice": datasets.Value("int32"),
        "worker": TEXT,
        "batch": TEXT,
        "split": TEXT,
        "extra": {"confidence": datasets.Value("int32")},
    }
)


def write_parquet(rows, path: Path, features=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


def write_jsonl(rows, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def as_rows(data: datasets.Dataset) -> list[dict]:
    return [dict(row) for row in data]


def data_module(overrides, tmp_path):
    cfg = compose_config(overrides, tmp_path / "run")
    module = instantiate(cfg.data, tokenizer=byte_tokenizer(), seed=0)
    module.setup("fit")
    return module


def byte_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- TL;DR
def test_tldr_raw_comparisons_in_the_hub_parquet_layout(tmp_path):
    """data=tldr_comparisons reads refs/convert/parquet's comparisons/{train,validation}/*.parquet."""
    repo = tmp_path / "summarize_from_feedback"
    write_parquet(TLDR_RAW * 4, repo / "comparisons" / "train" / "0000.parquet", COMPARISON_FEATURES)
    write_parquet(TLDR_RAW + [CNNDM_ROW], repo / "comparisons" / "validation" / "0000.parquet", COMPARISON_FEATURES)
    axis = [{"info": {"id": "a"}, "summary": {"text": "x"}, "split": "test"}]  # the other config: never read
    write_parquet(axis, repo / "axis" / "test" / "0000.parquet")
    data = load(
        str(repo),
        format="tldr_comparisons",
        revision=None,
        data_files={"train": "comparisons/train/*.parquet", "validation": "comparisons/validation/*.parquet"},
    )
    assert set(data) == {"train", "validation"} and data["train"].column_names == ["prompt", "chosen", "rejected"]
    assert as_rows(data["train"])[:2] == TLDR_PAIRS  # choice 1 swaps; one leading space, no trailing
    assert as_rows(data["validation"]) == TLDR_PAIRS  # the CNN/DM row is dropped

    module = data_module(
        [
            "data=tldr_comparisons",
            f"data.dataset.path={repo}",
            "data.dataset.revision=null",
            "data.val_split=validation",
            "data.max_prompt_length=40",
            "data.max_length=50",
        ],
        tmp_path,
    )
    tokenizer = module.tokenizer
    pair = module.val_set[0]
    assert tokenizer.decode(pair["prompt_ids"]) == TLDR_PROMPT[-40:]  # cut from the left: "TL;DR:" stays
    assert TLDR_PROMPT[-40:].endswith("What should I do?\n\nTL;DR:")
    assert pair["chosen_ids"] == byte_ids(tokenizer, " Cat breaks cups, help.")[:10]  # 50 - 40 bytes left
    assert pair["rejected_ids"] == byte_ids(tokenizer, " cat bad") + [tokenizer.eos_token_id]


def test_tldr_options_keep_cnndm_and_collapse_blank_lines():
    raw = datasets.Dataset.from_list(TLDR_RAW + [CNNDM_ROW], features=COMPARISON_FEATURES)
    kept = as_rows(convert(raw, "tldr_comparisons", include_cnndm=True, collapse_blank_lines=True))
    assert len(kept) == 3
    assert kept[0]["prompt"] == TLDR_PROMPT.replace("table.\n\nWhat", "table.\nWhat")
    assert kept[2] == {
        "prompt": "Article:\nA storm hit the coast.\n\nTL;DR:",
        "chosen": " A storm.",
        "rejected": " Weather news.",
    }


def test_tldr_prompt_chosen_rejected_form_gives_the_same_pairs(tmp_path):
    """data=tldr on a copy of trl-lib/tldr-preference's layout (data/<split>-*.parquet)."""
    repo = tmp_path / "tldr-preference"
    write_parquet(TLDR_PAIRS * 4, repo / "data" / "train-00000-of-00001.parquet")
    write_parquet(TLDR_PAIRS, repo / "data" / "validation-00000-of-00001.parquet")
    data = load(str(repo))
    assert detect_schema(data["train"].column_names) == "prompt_chosen_rejected"
    assert as_rows(data["validation"]) == as_rows(convert(datasets.Dataset.from_list(TLDR_RAW), "tldr_comparisons"))

    module = data_module(["data=tldr", f"data.dataset.path={repo}", "data.val_size=2", "data.packing=false"], tmp_path)
    # two posts with four comparisons each: the split by prompt holds out one post's four (val_size=2 asks for 2 pairs)
    assert module.stats["train_pairs"] == 4 and module.stats["validation_pairs"] == 4
    assert module.stats["validation_prompts"] == 1 and module.stats["val_prompts_in_train"] == 0
    batch = next(iter(module.val_dataloader()))
    assert batch.input_ids.shape[0] == 8  # B chosen rows, then B rejected rows


def test_bad_comparison_names_the_row():
    rows = [dict(TLDR_RAW[0], choice=2)]
    with pytest.raises(DataError, match=r"row 0 has choice=2 and 2 summaries"):
        convert(datasets.Dataset.from_list(rows), "tldr_comparisons")


# ----------------------------------------------------------------------------- HH-RLHF
HH = [
    {
        "chosen": "\n\nHuman: Name a cat.\n\nAssistant: Whiskers.\n\nHuman: Another one?"
        "\n\nAssistant: How about Mittens?",
        "rejected": "\n\nHuman: Name a cat.\n\nAssistant: Whiskers.\n\nHuman: Another one?\n\nAssistant: How about no.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
    },
]


def test_hh_rlhf_prompt_is_the_common_prefix_up_to_the_last_assistant_turn(tmp_path):
    repo = tmp_path / "hh-rlhf"
    for subset in ("helpful-base", "harmless-base"):
        write_jsonl(HH * 3, repo / subset / "train.jsonl.gz")
        write_jsonl(HH, repo / subset / "test.jsonl.gz")
    module = data_module(["data=hh_rlhf", f"data.dataset.path={repo}", "data.val_split=test"], tmp_path)
    assert module.stats["train_pairs"] == 12 and module.stats["validation_pairs"] == 4
    pairs = as_rows(load(str(repo), format="hh_rlhf")["test"])
    assert pairs[0] == {
        "prompt": "\n\nHuman: Name a cat.\n\nAssistant: Whiskers.\n\nHuman: Another one?\n\nAssistant:",
        "chosen": " How about Mittens?",
        "rejected": " How about no.",
    }
    assert pairs[1] == {
        "prompt": "\n\nHuman: Hi\n\nAssistant:",
        "chosen": " Hello! How can I help?",
        "rejected": " Go away.",
    }


def test_hh_rlhf_as_chat_messages():
    pair = as_rows(convert(datasets.Dataset.from_list(HH[:1]), "hh_rlhf", chat=True))[0]
    assert pair["prompt"] == [
        {"role": "user", "content": "Name a cat."},
        {"role": "assistant", "content": "Whiskers."},
        {"role": "user", "content": "Another one?"},
    ]
    assert pair["chosen"] == [{"role": "assistant", "content": "How about Mittens?"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "How about no."}]


def test_transcripts_that_never_share_an_assistant_turn_are_refused():
    assert split_transcripts("\n\nHuman: a", "\n\nHuman: b") == ("", "\n\nHuman: a", "\n\nHuman: b")
    with pytest.raises(DataError, match="row 0 has no common"):
        convert(datasets.Dataset.from_list([{"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}]), "hh_rlhf")


# ----------------------------------------------------------------------------- instruction, ShareGPT, conversational
INSTRUCTION = [
    {
        "instruction": "Fix the spelling.",
        "input": "freind",
        "output": "friend",
        "chosen": "friend",
        "rejected": "Learn to spell: friend",
    },
    {"instruction": "Say hello.", "input": "", "output": "Hello.", "chosen": "Hello.", "rejected": "No."},
]
ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def test_instruction_prompt_template_and_chat(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(INSTRUCTION * 3))
    pairs = as_rows(load(str(path))["train"])
    prompt = f"{ALPACA}\n\n### Instruction:\nFix the spelling.\n\n### Input:\nfreind\n\n### Response:\n"
    assert pairs[0] == {"prompt": prompt, "chosen": "friend", "rejected": "Learn to spell: friend"}
    assert pairs[1]["prompt"] == f"{ALPACA}\n\n### Instruction:\nSay hello.\n\n### Response:\n"  # no empty input
    chat = as_rows(load(str(path), format="instruction", options={"chat": True})["train"])[0]
    assert chat["prompt"] == [{"role": "user", "content": "Fix the spelling.\n\nfreind"}]
    assert chat["chosen"] == [{"role": "assistant", "content": "friend"}]

    module = data_module(
        ["data=instruction", f"data.dataset.path={path}", "data.dataset.options.chat=true", "data.val_size=2"], tmp_path
    )
    tokenizer = module.tokenizer  # its chat template: "<|role|>\ncontent\n" per message
    pairs = [*module.train_set, *module.val_set]  # the split by prompt puts all three copies on one side
    encoded = {tokenizer.decode(p["prompt_ids"]): p for p in pairs}
    pair = encoded["<|user|>\nFix the spelling.\n\nfreind\n<|assistant|>\n"]
    assert pair["chosen_ids"] == byte_ids(tokenizer, "friend\n") + [tokenizer.eos_token_id]


SHAREGPT = [
    {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello."},
            {"from": "human", "value": "Capital of France?"},
        ],
        "chosen": {"from": "gpt", "value": "Paris."},
        "rejected": {"from": "gpt", "value": "Lyon."},
    },
    {
        "conversations": [{"from": "human", "value": "2+2?"}],
        "chosen": {"from": "gpt", "value": "4"},
        "rejected": {"from": "gpt", "value": "5"},
    },
]


def test_sharegpt_roles_map_onto_chat_messages(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT * 2))
    pair = as_rows(load(str(path))["train"])[0]
    assert pair["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert pair["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Lyon."}]
    module = data_module(["data=sharegpt", f"data.dataset.path={path}", "data.val_size=1"], tmp_path)
    prompts = {module.tokenizer.decode(p["prompt_ids"]) for p in [*module.train_set, *module.val_set]}
    rendered = (
        "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\nCapital of France?\n<|assistant|>\n"
    )
    assert rendered in prompts


def test_unknown_sharegpt_speaker_is_named():
    rows = [dict(SHAREGPT[1], conversations=[{"from": "observation", "value": "x"}])]
    with pytest.raises(DataError, match="turn from 'observation'"):
        convert(datasets.Dataset.from_list(rows), "sharegpt")


def test_conversational_pairs_with_an_explicit_or_implicit_prompt(tmp_path):
    user = [{"role": "user", "content": "Capital of France?"}]
    explicit = {
        "prompt": user,
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    repeated = {"prompt": user, "chosen": user + explicit["chosen"], "rejected": user + explicit["rejected"]}
    implicit = {"chosen": repeated["chosen"], "rejected": repeated["rejected"]}
    path = write_jsonl([explicit, repeated], tmp_path / "conversations.jsonl")
    assert as_rows(load(str(path))["train"]) == [explicit, explicit]
    assert as_rows(convert(datasets.Dataset.from_list([implicit]), "auto")) == [explicit]


# ----------------------------------------------------------------------------- bad input
def test_unknown_schema_lists_the_schemas_and_the_columns_found(tmp_path):
    path = write_jsonl([{"question": "q", "answer_a": "a", "answer_b": "b"}] * 2, tmp_path / "odd.jsonl")
    with pytest.raises(DataError) as error:
        load(str(path))
    message = str(error.value)
    for schema in (
        "prompt_chosen_rejected (prompt, chosen, rejected)",
        "tldr_comparisons (info, summaries, choice)",
        "instruction (instruction, chosen, rejected)",
        "sharegpt (conversations, chosen, rejected)",
        "hh_rlhf (chosen, rejected)",
    ):
        assert schema in message
    assert "Columns found: ['answer_a', 'answer_b', 'question']" in message


def test_a_named_format_with_missing_columns_is_refused():
    with pytest.raises(
        DataError,
        match=r"needs the columns \['instruction', 'chosen', 'rejected'\]; missing "
        r"\['instruction'\]",
    ):
        convert(datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}]), "instruction")
    with pytest.raises(DataError, match="Unknown data format 'alpaca'"):
        convert(datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}]), "alpaca")
