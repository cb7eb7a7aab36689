"""Faults of a run's setting rather than its data: a model path that does not exist, a checkpoint of
another model shape, wandb online without a network. None of these tests touches the network: the
unreachable wandb server is a local port that refuses at once, or one that never answers."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from gpo_lab.errors import ConfigError
from gpo_lab.eval.judges import RewardModelJudge
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.hf import hf_causal_lm, hf_tokenizer, model_location
from gpo_lab.models.reference import frozen_copy
from gpo_lab.models.tiny import tiny_causal_lm
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.run import wandb_mode
from gpo_lab.run.wandb_mode import reachable_mode, server_unreachable
from gpo_lab.store.run_files import RunFiles
from gpo_lab.training.gpo_module import GPOModule
from tests.helpers.runs import run_training

REFUSING_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


# ----------------------------------------------------------------- model paths
@pytest.mark.parametrize("name", ["/nonexistent/path", "./models/policy", "~/no/such/model", "runs/x/checkpoint/"])
def test_a_missing_local_model_path_is_named_with_the_fix(name):
    with pytest.raises(ConfigError, match=r"model\.name .*no such directory: .*hub name") as caught:
        hf_tokenizer(name)
    assert name in str(caught.value) and "Repo id" not in str(caught.value)
    with pytest.raises(ConfigError, match="no such directory"):
        hf_causal_lm(byte_tokenizer(), name)  # the policy's and reference=model's loader


def test_a_file_or_a_folder_without_a_model_is_named(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not used")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        hf_causal_lm(byte_tokenizer(), str(weights))
    with pytest.raises(ConfigError, match="holds no config.json"):
        hf_causal_lm(byte_tokenizer(), str(tmp_path))


def test_the_judge_path_is_checked_the_same_way():
    with pytest.raises(ConfigError, match=r"judge\.name: no such directory: /nonexistent/judge"):
        RewardModelJudge(name="/nonexistent/judge")


def test_hub_names_and_saved_models_pass_through(tmp_path):
    """Controls: a hub id is never taken for a path; a saved model's directory loads as before."""
    assert model_location("EleutherAI/pythia-160m") == "EleutherAI/pythia-160m"
    assert model_location("gpt2") == "gpt2"
    tokenizer = byte_tokenizer()
    tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    assert model_location(str(tmp_path)) == str(tmp_path)
    assert hf_causal_lm(tokenizer, str(tmp_path)).config.hidden_size == 16


# ----------------------------------------------------------------- checkpoints of another model shape
def language_module(hidden_size: int) -> GPOModule:
    torch.manual_seed(0)
    policy = tiny_causal_lm(byte_tokenizer(), hidden_size=hidden_size, num_layers=1, num_heads=2)
    return GPOModule(policy, frozen_copy(policy), GPOLoss("logistic"), 0.1, partial(torch.optim.SGD, lr=0.1))


def saved_checkpoint(module) -> dict:
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def test_a_checkpoint_of_another_model_shape_is_refused_with_what_differs():
    old, new = language_module(hidden_size=16), language_module(hidden_size=32)
    checkpoint = saved_checkpoint(old)
    with pytest.raises(ConfigError, match="belongs to another model config") as caught:
        new.on_load_checkpoint(checkpoint)
    message = str(caught.value)
    assert "policy.model.embed_tokens.weight: [259, 16] in the checkpoint, [259, 32] now" in message
    assert "aside" in message and "name=" in message and len(message) < 2000
    assert "size mismatch" not in message


def test_a_checkpoint_with_other_tensors_is_refused_and_one_of_this_model_loads():
    module = language_module(hidden_size=16)
    checkpoint = saved_checkpoint(module)
    extra = dict(checkpoint, state_dict={**checkpoint["state_dict"], "policy.extra.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match=r"1 tensor\(s\) only in the checkpoint: policy\.extra\.weight"):
        module.on_load_checkpoint(extra)
    module.on_load_checkpoint(checkpoint)  # the control: its own checkpoint, the reference put back
    module.load_state_dict(checkpoint["state_dict"])


@pytest.mark.slow
def test_resuming_into_another_model_shape_fails_clearly_and_keeps_the_checkpoint(tmp_path):
    """The bandit through the run path: a crash after step 2 leaves a checkpoint; the checkpoint is
    then made one of another number of actions (as a code change would), and the rerun refuses it."""
    overrides = [
        "+experiment=bandit",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "callbacks.checkpoint.every_n_train_steps=2",
        "+callbacks.crash._target_=tests.helpers.faults.RaiseAtStep",
        "+callbacks.crash.step=3",
    ]
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected crash after step 3"):
        run_training(overrides, run_dir)
    last = RunFiles(run_dir).last_checkpoint
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"]["logits"] = torch.zeros(11, dtype=torch.float64)
    torch.save(checkpoint, last)
    before = last.read_bytes()
    with pytest.raises(ConfigError, match="belongs to another model config"):
        run_training(overrides, run_dir)
    summary = json.loads(RunFiles(run_dir).summary.read_text())
    assert summary["status"] == "failed"
    assert "ConfigError" in summary["error"] and "belongs to another model config" in summary["error"]
    assert "logits: [11] in the checkpoint, [10] now" in summary["error"]
    assert str(last.parent) in summary["error"] and "size mismatch" not in summary["error"]
    assert last.read_bytes() == before  # nothing moved or rewritten


# ----------------------------------------------------------------- wandb without a network
@pytest.fixture
def fresh_reach(monkeypatch):
    """Each test asks the server itself, not the answer an earlier test left in this process."""
    monkeypatch.setattr(wandb_mode, "_reached", {})


def test_a_refusing_server_is_found_at_once_and_asked_once(fresh_reach, monkeypatch):
    start = time.monotonic()
    why = server_unreachable(REFUSING_SERVER)
    assert why is not None and "refused" in why.lower() and time.monotonic() - start < 3
    calls = []
    monkeypatch.setattr(wandb_mode, "_probe", lambda *args: calls.append(args))
    assert server_unreachable(REFUSING_SERVER) == why and calls == []  # the next job of the sweep reuses it


def test_a_server_that_never_answers_is_bounded_in_time(fresh_reach):
    with socket.socket() as listener:  # accepts connections (the backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        start = time.monotonic()
        why = server_unreachable(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5)
    assert why is not None and time.monotonic() - start < 3


def test_a_server_that_answers_is_reachable_whatever_its_status(fresh_reach):
    """The control: any HTTP answer (here 404 to a bare HEAD) means online stays online."""

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert server_unreachable(url) is None
    finally:
        server.shutdown()
        server.server_close()


def test_online_without_the_server_falls_back_to_offline_loudly(fresh_reach, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", REFUSING_SERVER)
    with caplog.at_level(logging.WARNING, logger="gpo_lab.run.wandb_mode"):
        mode, why = reachable_mode("online")
    assert mode == "offline" and why.startswith(f"cannot reach {REFUSING_SERVER}")
    assert "OFFLINE" in caplog.text and "wandb sync" in caplog.text and "WANDB_MODE=offline" in caplog.text
    assert reachable_mode("offline") == ("offline", None) and reachable_mode("disabled") == ("disabled", None)


@pytest.mark.slow
def test_a_wandb_run_without_network_logs_offline_within_seconds(tmp_path, monkeypatch, fresh_reach, caplog):
    import wandb

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", REFUSING_SERVER)
    run_dir = tmp_path / "run"
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        summary = run_training(["+experiment=smoke", "trainer.max_steps=2", "logger=wandb"], run_dir)
    wandb.finish()
    assert summary["status"] == "completed", summary.get("error")
    assert time.monotonic() - start < 90  # before: about 2 minutes of waiting, then CommError
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert f"cannot reach {REFUSING_SERVER}" in caplog.text and "wandb sync" in caplog.text
    assert json.loads(RunFiles(run_dir).summary.read_text())["status"] == "completed"
