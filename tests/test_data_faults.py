"""Data files as real users have them: edited in place, behind an unusable datasets cache, CSV answers
that look like numbers, responses of the wrong shape, ODPO offsets that are not numbers."""

import errno
import gzip
import json
import math
import os
import re

import datasets
import pandas
import pytest

from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.data.sources import DataError, load
from gpo_lab.models.tokenizers import word_tokenizer
from tests.helpers.runs import run_training

WORDS = "p0 p1 p2 p3 p4 p5 p6 p7 p8 p9 good bad 2 3 NA None null N/A".split()


@pytest.fixture
def words():
    return word_tokenizer(WORDS)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """A datasets cache of this test only, so no earlier run's Arrow files are reused."""
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def pairs(count, chosen="good"):
    return [{"prompt": f"p{i % 10}", "chosen": chosen, "rejected": "bad"} for i in range(count)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def module(data, tokenizer, **kwargs):
    built = PreferenceDataModule(data, tokenizer=tokenizer, val_size=1, max_length=16, max_prompt_length=4, **kwargs)
    built.setup("fit")
    return built


# --------------------------------------------------------------------------- 1: an edited file
@pytest.mark.parametrize("how", ["path", "data_files"])
def test_an_edited_file_is_read_anew_even_with_its_old_size_and_time(tmp_path, how):
    """Same path, same size, same modification time, new content: the new content is what loads."""
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs(6, chosen="good"))
    read = lambda: load(str(path), split="train") if how == "path" else load("json", data_files=str(path))["train"]
    assert set(read()["chosen"]) == {"good"}
    stat = path.stat()
    write_jsonl(path, pairs(6, chosen="fine"))  # same length as "good"
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert set(read()["chosen"]) == {"fine"}


@pytest.mark.slow
def test_a_run_on_an_edited_file_trains_on_its_new_pairs(tmp_path):
    """The run's train_pairs follow the file: 60 pairs, then the same path cut to 30."""
    unique = lambda count: [row | {"prompt": f"question {i}"} for i, row in enumerate(pairs(count))]
    path = write_jsonl(tmp_path / "pairs.jsonl", unique(60))
    overrides = ["+experiment=smoke", "data=hf", f"data.dataset.path={path}", "data.dataset.split=train"]
    overrides += ["trainer.max_steps=1", "trainer.val_check_interval=1", "data.val_size=10"]
    assert run_training(overrides, tmp_path / "first")["data"]["train_pairs"] == 50
    stat = path.stat()
    write_jsonl(path, unique(30))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run_training(overrides, tmp_path / "second")["data"]["train_pairs"] == 20


# --------------------------------------------------------------------------- 5: an unusable datasets cache
def test_local_files_load_whatever_the_datasets_cache(tmp_path, monkeypatch):
    """A cache that cannot be written (here a file where its folder goes) does not stop a local file."""
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "a-file" / "cache"))
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    assert len(load(str(path), split="train")) == 4
    assert len(load("json", data_files={"train": str(path)})["train"]) == 4


def test_an_unwritable_datasets_cache_is_named_with_the_fix(tmp_path, monkeypatch):
    """What datasets must cache (a compressed file here) fails naming the cache and HF_DATASETS_CACHE."""
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "a-file" / "cache"))
    packed = tmp_path / "pairs.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in pairs(4)).encode()))
    with pytest.raises(DataError, match="datasets cache .* cannot be written .*Set HF_DATASETS_CACHE"):
        load("json", data_files=str(packed))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_datasets_cache_is_named_and_a_data_file_error_is_not(tmp_path, monkeypatch, code):
    cache = tmp_path / "cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))

    def failing(where):
        def load_dataset(*args, **kwargs):
            try:
                raise OSError(code, os.strerror(code), str(where))
            except OSError as error:
                raise RuntimeError("the builder failed") from error

        return load_dataset

    monkeypatch.setattr(datasets, "load_dataset", failing(cache / "json" / "x.lock"))
    with pytest.raises(DataError, match="HF_DATASETS_CACHE to a writable folder"):
        load("org/pairs")
    monkeypatch.setattr(datasets, "load_dataset", failing(tmp_path / "elsewhere" / "pairs.jsonl.gz"))
    with pytest.raises(DataError, match="Check the path") as error:
        load("org/pairs")
    assert "HF_DATASETS_CACHE" not in str(error.value)


# --------------------------------------------------------------------------- 10: CSV text stays text
def test_csv_answers_that_look_like_numbers_or_missing_values_stay_text(tmp_path, words):
    answers = ["2", "3", "NA", "None", "null", "N/A"]
    rows = [{"prompt": f"p{i}", "chosen": answer, "rejected": "bad"} for i, answer in enumerate(answers)]
    path = tmp_path / "pairs.csv"
    pandas.DataFrame(rows).to_csv(path, index=False)
    data = load(str(path), split="train")
    assert data["chosen"] == answers
    built = module(data, words)
    assert built.stats["train_pairs"] + built.stats["validation_pairs"] == len(answers)


# --------------------------------------------------------------------------- 11: responses of the wrong shape
def test_a_parquet_message_without_a_role_is_named_with_its_row(tmp_path, words):
    rows = [{"prompt": "p1", "chosen": {"role": "assistant", "content": "good"}, "rejected": {"content": "bad"}}] * 4
    path = tmp_path / "pairs.parquet"
    pandas.DataFrame(rows).to_parquet(path)
    with pytest.raises(DataError) as error:
        module(load(str(path), split="train"), words)
    message = str(error.value)
    assert "pairs.parquet, row 1" in message and "'rejected'" in message and "'role' is missing" in message
    assert "{'role': 'assistant', 'content': '...'}" in message  # the expected shape


@pytest.mark.parametrize(
    "response, found",
    [
        ({"text": "good"}, "holds a dict with keys ['text'], whose 'role' is missing"),
        ([{"role": "assistant"}], "holds a list whose item 1 is a dict with keys ['role'], whose 'content' is missing"),
        (7, "holds int 7"),
    ],
)
def test_a_jsonl_response_of_the_wrong_shape_is_named_with_its_row(tmp_path, words, response, found):
    rows = pairs(4)
    rows = [row | {"chosen": response} for row in rows]
    with pytest.raises(DataError, match=re.escape(f"pairs.jsonl, row 1: column 'chosen' (chosen) {found}; expected")):
        module(load(str(write_jsonl(tmp_path / "pairs.jsonl", rows)), split="train"), words)


def test_text_and_messages_of_the_right_shape_load(tmp_path, words):
    """A prompt as messages or text; a response as messages, one message, or text."""
    user, assistant = {"role": "user", "content": "p1"}, {"role": "assistant", "content": "good"}
    for prompt, chosen in (([user], [assistant]), ("p1", assistant), ([user], "good")):
        rows = [{"prompt": prompt, "chosen": chosen, "rejected": "bad"}] * 4
        data = load(str(write_jsonl(tmp_path / "pairs.jsonl", rows)), split="train")
        assert module(data, words).stats["train_pairs"] == 3


def test_a_value_of_another_kind_in_a_jsonl_column_names_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(row) for row in pairs(5)]
    lines[3] = lines[3].replace('"chosen": "good"', '"chosen": NaN')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="pairs.jsonl, line 4: 'chosen' holds NaN or an infinity where line 1 holds"):
        load(str(path), split="train")


# --------------------------------------------------------------------------- 12: ODPO's offset column
@pytest.mark.parametrize(
    "offset, found",
    [(None, "is empty"), ("abc", "'abc', not a number"), (math.nan, "nan"), (math.inf, "inf"), (1e300, "too large")],
)
@pytest.mark.parametrize("answers", ["words", "numbers"])
def test_a_bad_offset_is_named_with_its_row(tmp_path, words, offset, found, answers):
    """Row 4's offset; the answers are words or look like numbers ("2"), which stay text."""
    rows = [row | {"offset": 0.5} for row in pairs(6, chosen="good" if answers == "words" else "2")]
    rows[3]["offset"] = offset
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # NaN and Infinity as Python writes them
    with pytest.raises(DataError) as error:
        module(load(str(path), split="train"), words, columns={"offset": "offset"})
    message = str(error.value)
    if isinstance(offset, str):  # text in a column of numbers: refused as the file is read, by its line
        assert "pairs.jsonl, line 4: 'offset' holds text where line 1 holds a number" in message
    else:
        assert "pairs.jsonl, row 4: column 'offset' (offset)" in message and found in message
        assert "expected a finite number with |offset| <= 1e+06" in message
    assert "holds int" not in message


def test_good_offsets_reach_the_batch_from_jsonl_and_csv(tmp_path, words):
    rows = [row | {"offset": i / 4} for i, row in enumerate(pairs(6))]
    csv = tmp_path / "pairs.csv"
    pandas.DataFrame(rows).to_csv(csv, index=False)
    for path in (write_jsonl(tmp_path / "pairs.jsonl", rows), csv):
        built = module(load(str(path), split="train"), words, columns={"offset": "offset"}, batch_size=8)
        offsets = sorted(next(iter(built.train_dataloader())).offset.tolist())
        assert len(offsets) == 5 and set(offsets) <= {i / 4 for i in range(6)}


def test_a_csv_offset_that_is_not_a_number_is_named_with_its_row(tmp_path, words):
    rows = [row | {"offset": "0.5"} for row in pairs(6)]
    rows[2]["offset"] = "abc"
    path = tmp_path / "pairs.csv"
    pandas.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(DataError, match="pairs.csv, row 3: column 'offset' \\(offset\\) holds 'abc', not a number"):
        module(load(str(path), split="train"), words, columns={"offset": "offset"})
