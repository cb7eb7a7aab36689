"""Damaged cache entries, unusable cache folders and full disks: what each cache user and the checkpoint
writer do (RELIABILITY.md, "Caches and the disk"). Full and read-only disks are simulated by making the
write raise what the system raises, so these tests run anywhere."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import gpo_lab.models.reference_cache as reference_cache_module
import gpo_lab.store.lock as lock_module
from gpo_lab.errors import ConfigError
from gpo_lab.models.reference_cache import ReferenceLogpCache
from gpo_lab.run.checkpoints import AtomicCheckpointIO, usable_checkpoint
from gpo_lab.store.atomic import NoSpaceLeft
from gpo_lab.store.cache import cached_value, spec_key
from gpo_lab.store.lock import file_lock
from gpo_lab.tasks.synthetic import NoisyBehaviour, TopicTask
from gpo_lab.tasks.synthetic.pairs import PAIRS_FILE, PairSettings, offline_pairs, read_pairs
from gpo_lab.tasks.synthetic.sft import CACHE_FIX, WEIGHTS_FILE, SFTSettings, sft_policy
from tests.helpers.models import TINY_MODEL

SPEC = {"num_pairs": 3, "reference": "abc"}
VALUES = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])


def _counting(calls: list) -> callable:
    def compute() -> torch.Tensor:
        calls.append(1)
        return VALUES

    return compute


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


DAMAGES = {
    "truncated values": lambda entry: _truncate(entry / "logps.safetensors"),
    "garbage values": lambda entry: (entry / "logps.safetensors").write_bytes(b"\xff" * 64),
    "values missing": lambda entry: (entry / "logps.safetensors").unlink(),
    "values of another shape": lambda entry: save_file({"logps": torch.zeros(2, 2)}, str(entry / "logps.safetensors")),
    "garbage spec": lambda entry: (entry / "spec.json").write_text("{not json"),
    "edited spec": lambda entry: (entry / "spec.json").write_text(json.dumps({"num_pairs": 3})),
}


# ----------------------------------------------------------------------------------- damaged entries
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_reference_entry_is_moved_aside_and_computed_again(tmp_path, caplog, damage):
    cache, calls = ReferenceLogpCache(tmp_path), []
    cache.get_or_compute(SPEC, _counting(calls))
    entry = cache.path(spec_key(SPEC)).parent
    DAMAGES[damage](entry)
    damaged = {p.name: p.read_bytes() for p in entry.iterdir()}

    values, computed = cache.get_or_compute(SPEC, _counting(calls))
    assert computed and torch.equal(values, VALUES) and len(calls) == 2
    (aside,) = tmp_path.glob(f"{entry.name}.damaged-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == damaged  # nothing deleted
    assert f"{entry} is damaged" in caplog.text and aside.name in caplog.text
    assert cache.get_or_compute(SPEC, _counting(calls))[1] is False and len(calls) == 2  # the new entry is read


TASK = TopicTask(num_topics=6, max_prompt_topics=3, max_response_words=5)


def test_a_damaged_sft_policy_is_moved_aside_and_trained_again(tmp_path, caplog):
    behaviour, tokenizer = NoisyBehaviour(), TASK.tokenizer()
    settings = SFTSettings(steps=2, batch_size=4, warmup_steps=1)
    first, info = sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, settings, tmp_path)
    _truncate(Path(info["sft_path"]) / WEIGHTS_FILE)
    second, again = sft_policy(TASK, behaviour, tokenizer, TINY_MODEL, settings, tmp_path)
    assert again["sft_trained_now"] and again["sft_path"] == info["sft_path"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert len(list(tmp_path.glob(f"sft-{info['sft_key']}.damaged-*"))) == 1 and "is damaged" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: json.dumps({"train": [], "validation": [], "stats": {}}),  # well-formed, but no pairs
        lambda text: text.replace('"chosen"', '"chosen_"', 1),  # a row without its text
    ],
    ids=["truncated", "empty", "row without chosen"],
)
def test_damaged_offline_pairs_are_moved_aside_and_generated_again(tmp_path, damage):
    settings = PairSettings(num_train_prompts=12, num_eval_prompts=8, source="behaviour")
    behaviour, policy = NoisyBehaviour(), torch.nn.Linear(1, 1)
    splits, stats = offline_pairs(TASK, behaviour, policy, None, settings, "sft-key", tmp_path)
    entry = tmp_path / f"pairs-{stats['pairs_key']}"
    text = (entry / PAIRS_FILE).read_text()
    (entry / PAIRS_FILE).write_text(damage(text))
    with pytest.raises(ValueError):  # what every later run met before: a JSON or data error
        read_pairs(entry)
    again, again_stats = offline_pairs(TASK, behaviour, policy, None, settings, "sft-key", tmp_path)
    assert again_stats["pairs_generated_now"] and again["train"].to_list() == splits["train"].to_list()
    assert (entry / PAIRS_FILE).read_text() == text
    assert len(list(tmp_path.glob(f"{entry.name}.damaged-*"))) == 1


# ----------------------------------------------------------------------------------- unusable folders
def _read_only(monkeypatch) -> None:
    """Opening a lock file raises what a read-only file system raises (root may write anywhere, so no chmod)."""

    def refuse(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(lock_module, "open", refuse, raising=False)


def test_a_read_only_cache_reads_its_entries_and_refuses_a_new_one_with_the_fix(tmp_path, monkeypatch):
    cache = ReferenceLogpCache(tmp_path)
    cache.get_or_compute(SPEC, lambda: VALUES)
    _read_only(monkeypatch)
    assert cache.get_or_compute(SPEC, lambda: VALUES)[1] is False  # an existing entry needs no write
    with pytest.raises(ConfigError) as refused:
        cache.get_or_compute({**SPEC, "reference": "new"}, lambda: VALUES)
    message = str(refused.value)
    assert str(tmp_path) in message and "read-only" in message
    assert "GPO_LAB_CACHE" in message and "reference_cache.enabled=false" in message
    DAMAGES["truncated values"](cache.path(spec_key(SPEC)).parent)
    with pytest.raises(ConfigError, match=f"logps-{spec_key(SPEC)} is damaged .*read-only"):
        cache.get_or_compute(SPEC, lambda: VALUES)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_cache_folder_without_write_permission_is_refused_with_the_fix(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="GPO_LAB_CACHE"):
            ReferenceLogpCache(tmp_path / "reference_logps").get_or_compute(SPEC, lambda: VALUES)
    finally:
        tmp_path.chmod(0o755)


def test_a_cache_variable_naming_a_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("a file")
    monkeypatch.setenv("GPO_LAB_CACHE", str(not_a_folder))
    with pytest.raises(ConfigError) as refused:
        ReferenceLogpCache().get_or_compute(SPEC, lambda: VALUES)
    assert f"{not_a_folder} is a file, not a folder" in str(refused.value) and "GPO_LAB_CACHE" in str(refused.value)
    with pytest.raises(ConfigError, match="synthetic.cache_dir"):  # the synthetic task's cache says its own key
        cached_value(not_a_folder, "pairs", {"a": 1}, lambda d: None, lambda d: d, CACHE_FIX)
    assert not_a_folder.read_text() == "a file"


# ----------------------------------------------------------------------------------- full disks
@pytest.mark.parametrize(
    "full",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors'
    ],
    ids=["OSError", "safetensors"],
)
def test_a_full_disk_while_caching_says_so_and_leaves_no_lock_or_temporary(tmp_path, monkeypatch, full):
    def no_space(*args, **kwargs):
        raise full

    monkeypatch.setattr(reference_cache_module, "save_file", no_space)
    with pytest.raises(NoSpaceLeft, match=f"^No space left on {tmp_path}") as raised:
        ReferenceLogpCache(tmp_path).get_or_compute(SPEC, lambda: VALUES)
    assert "GPO_LAB_CACHE" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no stray lock, no half entry
    monkeypatch.undo()
    assert ReferenceLogpCache(tmp_path).get_or_compute(SPEC, lambda: VALUES)[1] is True
    assert [p.name for p in tmp_path.iterdir()] == [f"logps-{spec_key(SPEC)}"]  # nor after a build


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def _torch_short_write(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.parametrize("how", ["write fails", "torch's short write"])
def test_a_full_disk_while_checkpointing_says_so_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch, how):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 5}, path)
    earlier = path.read_bytes()
    if how == "write fails":
        opened = Path.open
        monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: _FullDisk(opened(self, mode, *a, **k), 500))
    else:
        monkeypatch.setattr(torch, "save", _torch_short_write)
    with pytest.raises(NoSpaceLeft, match=f"^No space left on {path.parent} \\(writing last.ckpt"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 10}, path)
    monkeypatch.undo()
    assert path.read_bytes() == earlier and list(path.parent.iterdir()) == [path]
    assert usable_checkpoint(path.parent) == (path, 5)


# ----------------------------------------------------------------------------------- the lock
def test_the_cache_lock_takes_turns_and_leaves_no_file(tmp_path):
    lock, inside, most = tmp_path / ".entry.lock", [], []

    def job():
        with file_lock(lock):
            inside.append(1)
            most.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=job) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(most) == 6 and max(most) == 1  # a waiter on a removed lock file locks the path afresh
    assert not lock.exists()


def test_a_job_waiting_for_a_lock_says_which_file_and_who_holds_it(tmp_path, caplog):
    lock, held = tmp_path / ".entry.lock", threading.Event()

    def holder():
        with file_lock(lock):
            held.set()
            time.sleep(1.0)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    caplog.set_level(logging.INFO, logger="gpo_lab")
    started = time.monotonic()
    with file_lock(lock):
        waited = time.monotonic() - started
    thread.join(10)
    assert waited > 0.3  # it did wait for the holder
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waiting for")]
    assert f"Waiting for {lock}, held by pid {os.getpid()} on {socket.gethostname()} since " in line
    assert not lock.exists()
