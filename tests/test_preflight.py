"""The checks before any job starts (gpo_lab/run/preflight.py): models, judges and datasets that cannot be read
here, a GPU that is not there, a cluster that is a template, all in one message before a directory exists."""

from __future__ import annotations

import time

import httpx
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError

from gpo_lab.run import preflight
from tests.helpers import ROOT
from tests.helpers.cli import run_cli
from tests.helpers.runs import compose_config

POLICY = "cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr"
JUDGE = "cleanrl/EleutherAI_pythia-6.9b-deduped__reward__tldr"
DATASET = "trl-lib/tldr-preference"


class NoHub:
    """The hub as seen from a machine without internet."""

    def repo_info(self, name, repo_type, timeout):
        raise ConnectionError("Name or service not known")


class HubWithout:
    """A reachable hub that has none of the names asked for."""

    def repo_info(self, name, repo_type, timeout):
        raise RepositoryNotFoundError(
            f"{name} not found", response=httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co"))
        )


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return tmp_path / "hub"


def cache_model(hub_cache, name: str) -> None:
    """A model as ``hf download`` leaves it in the cache: refs/main names a snapshot holding config.json."""
    repo = hub_cache / ("models--" + name.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")


def tldr_on_cpu(*overrides):
    return compose_config(["+experiment=tldr", "trainer=cpu", *overrides])


def test_every_missing_model_judge_and_dataset_is_named_once_with_its_keys_and_the_command_that_fetches_it(
    empty_cache,
):
    lines = preflight.problems(tldr_on_cpu(), hub=NoHub())
    text = "\n".join(lines)
    assert "3 model(s) or dataset(s) cannot be read on this machine:" in text
    assert f"  model {POLICY} (model.name, model.tokenizer.name): not in the local Hugging Face cache" in text
    assert f"  judge {JUDGE} (judge.name)" in text and f"  dataset {DATASET} (data.dataset.path)" in text
    assert "the hub cannot be reached (ConnectionError)" in text
    assert f"  hf download {POLICY}" in text and f"  hf download {JUDGE}" in text
    assert f"datasets.load_dataset('{DATASET}')" in text and "HF_HUB_OFFLINE=1" in text and "HF_HOME" in text


def test_what_the_cache_holds_or_a_local_directory_holds_is_not_asked_for(empty_cache, tmp_path):
    cache_model(empty_cache, POLICY)
    (empty_cache / "datasets--trl-lib--tldr-preference" / "snapshots").mkdir(parents=True)
    judge = tmp_path / "my_judge"
    judge.mkdir()
    assert preflight.problems(tldr_on_cpu(f"judge.name={judge}"), hub=NoHub()) == []


def test_offline_mode_is_named_and_the_hub_is_not_asked(empty_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    class Refuses:
        def repo_info(self, *args, **kwargs):
            raise AssertionError("asked the hub in offline mode")

    text = "\n".join(preflight.problems(tldr_on_cpu(), hub=Refuses()))
    assert "HF_HUB_OFFLINE=1 forbids the hub" in text and text.count("hf download") == 2


def test_a_name_the_hub_does_not_have_and_a_local_path_that_is_missing_say_so(empty_cache, tmp_path):
    text = "\n".join(preflight.problems(tldr_on_cpu(f"judge.name={tmp_path}/no_such_judge"), hub=HubWithout()))
    assert f"judge {tmp_path}/no_such_judge (judge.name): no such file or directory" in text
    assert f"model {POLICY} (model.name, model.tokenizer.name): no such repository on the hub" in text
    assert "hf download" not in text  # nothing to fetch: the names are wrong


def test_trainer_gpu_without_a_gpu_and_a_template_cluster_are_refused(empty_cache, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = compose_config(["+experiment=smoke", "trainer=gpu"])
    assert preflight.problems(config, hub=NoHub()) == [
        "trainer=gpu, but torch sees no GPU on this machine: run on a GPU node (or submit with cluster=<site>), or "
        "train on the CPU with trainer=cpu"
    ]
    lines = preflight.problems(compose_config(["+experiment=smoke", "cluster=example_site"]), hub=NoHub())
    assert lines[0].startswith("cluster=example_site is a template, not a site")
    assert preflight.problems(compose_config(["+experiment=smoke"]), hub=NoHub()) == []  # tiny, built in code


@pytest.mark.slow
def test_the_tldr_sweep_offline_exits_2_at_once_naming_everything_and_makes_no_directory(tmp_path):
    sweep_dir = tmp_path / "sweep"
    started = time.time()
    result = run_cli(
        ["+experiment=tldr", "-m", "beta=0.05,0.1", "loss=logistic,squared", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.time() - started < 60
    assert result.stderr.startswith("The sweep cannot start (nothing was started):"), result.stderr[-3000:]
    for name in (POLICY, JUDGE, DATASET):
        assert name in result.stderr
    assert "trainer=gpu, but torch sees no GPU" in result.stderr and "Traceback" not in result.stderr
    assert not sweep_dir.exists() and not (tmp_path / "hf").exists()
    # A sweep that names two models checks both (each job's config is composed as the launcher composes it).
    result = run_cli(
        ["+experiment=tldr", "trainer=cpu", "-m", "model.name=org/a,org/b", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and "model org/a (model.name, model.tokenizer.name)" in result.stderr
    assert "model org/b (model.name, model.tokenizer.name)" in result.stderr and not sweep_dir.exists()


def test_cfg_with_a_sweep_is_explained_not_a_traceback(tmp_path):
    result = run_cli(["+experiment=smoke", "-m", "--cfg", "job", "loss=logistic,hinge"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--cfg prints the config of one job" in result.stderr and "drop -m" in result.stderr
