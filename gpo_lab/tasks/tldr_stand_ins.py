"""Tiny stand-ins for the TL;DR study's downloads, built here in the formats of the real ones.

``+experiment=tldr_rehearsal`` runs ``+experiment=tldr``'s code path on a laptop before a GPU grid is
booked: a GPT-NeoX policy of the Pythia family with its byte-level BPE tokenizer (as
``cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr``), a GPT-NeoX sequence classifier as the reward-model
judge (as ``cleanrl/..._reward__tldr``), and pairs in ``trl-lib/tldr-preference``'s schema and prompt
template, laid out as the hub dataset is (``data/train-*.parquet``). Only sizes differ; the weights
are random, so the rehearsal checks the pipeline, not the paper's numbers.

Each is built once per cache folder (``$GPO_LAB_CACHE``, default ``.cache/gpo_lab``) by the config
resolver ``${gpo_lab.tldr_stand_in:policy|judge|data}``, which returns its directory: the config
names a path that exists before anything reads it. Building is atomic and locked, so the jobs of a
sweep that start together build it once.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from gpo_lab.store.atomic import atomic_path
from gpo_lab.store.cache import CACHE_ENV
from gpo_lab.store.lock import file_lock

VERSION = "v1"  # bump when a stand-in's content changes
PARTS = ("policy", "judge", "data")
TRAIN_PAIRS = 640
SEED = 0
EOS = "<|endoftext|>"
PAD = "[PAD]"
# Pythia's architecture (rotary on a quarter of each head, parallel attention and MLP), shrunk.
SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
VOCABULARY = 1024

SUBREDDITS = ["relationships", "AskReddit", "personalfinance", "tifu", "jobs", "dating_advice", "Advice"]
PEOPLE = ["my boyfriend", "my roommate", "my boss", "my sister", "a coworker", "my best friend", "my landlord"]
EVENTS = [
    ("forgot", "birthday"),
    ("borrowed", "car"),
    ("cancelled", "trip"),
    ("lost", "keys"),
    ("broke", "laptop"),
    ("ignored", "message"),
    ("moved", "desk"),
]
FEELINGS = ["upset", "confused", "angry", "worried", "embarrassed", "relieved"]
FILLER = [
    "We have known each other for {n} years.",
    "This happened last {day}.",
    "I tried to talk about it but it went badly.",
    "Everyone else thinks I am overreacting.",
    "I do not want to lose this over something small.",
    "It is not the first time this has happened.",
]
DAYS = ["Monday", "weekend", "month", "Friday", "summer"]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, ".cache/gpo_lab")) / "tldr_stand_ins" / VERSION


def tldr_stand_in(part: str) -> str:
    """The directory of a stand-in (``policy``, ``judge`` or ``data``), built on first use: a config resolver."""
    if part not in PARTS:
        raise ValueError(f"gpo_lab.tldr_stand_in: unknown part {part!r}; one of {', '.join(PARTS)}")
    root = cache_root()
    target = root / part
    if not target.is_dir():
        with file_lock(root / f".{part}.lock"):
            if not target.is_dir():
                with atomic_path(target, directory=True) as tmp:
                    BUILDERS[part](tmp)
    return str(target.resolve())


def pairs(count: int, seed: int = SEED) -> list[dict[str, str]]:
    """TL;DR-shaped pairs: a Reddit post in the dataset's prompt template; the chosen summary states what
    happened and how the author feels, the rejected one is vaguer (a preference a reward model can learn)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        person, (verb, thing), feeling = rng.choice(PEOPLE), rng.choice(EVENTS), rng.choice(FEELINGS)
        title = f"{person.capitalize()} {verb} my {thing} and I feel {feeling}"
        body = [f"So {person} {verb} my {thing}."] + [
            rng.choice(FILLER).format(n=rng.randint(2, 9), day=rng.choice(DAYS)) for _ in range(rng.randint(2, 5))
        ]
        body.append(f"I feel {feeling} and I do not know what to do.")
        prompt = f"SUBREDDIT: r/{rng.choice(SUBREDDITS)}\n\nTITLE: {title}\n\nPOST: {' '.join(body)}\n\nTL;DR:"
        chosen = f" {person} {verb} my {thing}, I feel {feeling}. What should I do?"
        rejected = rng.choice([" something happened.", f" {rng.choice(FILLER).format(n=3, day='week')}", " help"])
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def build_tokenizer(directory: Path):
    """A byte-level BPE tokenizer of the GPT-NeoX class, trained on the stand-in texts, with Pythia's
    end-of-text token and cleanrl's added padding token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPTNeoXTokenizerFast

    texts = [row[key] for row in pairs(TRAIN_PAIRS) for key in ("prompt", "chosen", "rejected")]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=VOCABULARY, special_tokens=[EOS, PAD], show_progress=False)
    tokenizer = GPTNeoXTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.save_pretrained(directory)
    return tokenizer


def _config(tokenizer, **extra):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZES,
        **extra,
    )


def build_policy(directory: Path) -> None:
    import torch
    from transformers import GPTNeoXForCausalLM

    tokenizer = build_tokenizer(directory)
    torch.manual_seed(SEED)
    GPTNeoXForCausalLM(_config(tokenizer)).save_pretrained(directory)


def build_judge(directory: Path) -> None:
    import torch
    from transformers import GPTNeoXForSequenceClassification

    tokenizer = build_tokenizer(directory)
    torch.manual_seed(SEED + 1)
    GPTNeoXForSequenceClassification(_config(tokenizer, num_labels=1)).save_pretrained(directory)


def build_data(directory: Path) -> None:
    """The hub dataset's layout: ``data/train-00000-of-00001.parquet`` (prompt, chosen, rejected)."""
    import datasets

    (directory / "data").mkdir()
    datasets.Dataset.from_list(pairs(TRAIN_PAIRS)).to_parquet(directory / "data" / "train-00000-of-00001.parquet")


BUILDERS = {"policy": build_policy, "judge": build_judge, "data": build_data}
