"""Checks before any job starts: every model, judge and dataset a sweep's jobs name can be read here, a GPU
is where ``trainer=gpu`` runs, and the cluster is a real one.

Without them a sweep of the TL;DR study on a machine without the hub starts every job, each failing
after seconds with a transformers traceback about a connection, and never says which models to fetch.
Here each job's config is composed as the launcher will compose it, the names are collected, and
anything missing ends the command with one message (exit code 2) that lists each by name with the
command that fetches it, before Hydra makes a directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, try_to_load_from_cache
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gpo_lab.models.hf import looks_local
from gpo_lab.run.exit_codes import missing_slurm

EXIT_USAGE = 2
HUB_TIMEOUT_S = 10
# (what, config key, hub repository type): the keys that name something to download.
NAMED = (
    ("model", "model.name", "model"),
    ("tokenizer", "model.tokenizer.name", "model"),
    ("reference model", "reference.model.name", "model"),
    ("judge", "judge.name", "model"),
    ("dataset", "data.dataset.path", "dataset"),
)
PLACEHOLDER_CLUSTERS = ("example_site",)  # templates to copy, not sites
INERT_GROUPS = {"loss", "optim"}  # their options name no model, dataset or device


@dataclass
class Needed:
    """One model or dataset, with every config key (and job) that names it."""

    what: str
    name: str
    repo_type: str
    keys: set[str] = field(default_factory=set)

    def fetch_command(self) -> str:
        if self.repo_type == "dataset":
            return f"python -c \"import datasets; datasets.load_dataset('{self.name}')\""
        return f"hf download {self.name}"


def job_configs(config: DictConfig) -> list[DictConfig]:
    """The config of every job of the sweep (or the run's own), composed as Hydra's basic sweeper and the
    launcher compose them: the sweep file's ``hydra.sweeper.params`` first, then the command line's overrides."""
    if OmegaConf.select(config, "hydra.mode") is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
        return [config]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    groups = set(OmegaConf.select(config, "hydra.runtime.choices", default={}) or {})
    distinct = {tuple(o for o in job if _may_name_a_resource(o, groups)): job for job in jobs}
    loader = GlobalHydra.instance().config_loader()  # a quarter of a second per job: one per distinct set
    return [loader.load_sweep_config(config, list(job)) for job in distinct.values()]


def _may_name_a_resource(override: str, groups: set[str]) -> bool:
    """Whether a job's override can change what :data:`NAMED` or the trainer name: a choice of a config group
    (but a loss or an optimizer), or a value at or above one of those keys."""
    key = override.split("=", 1)[0].lstrip("+~")
    if key in groups:
        return key not in INERT_GROUPS
    watched = [named for _, named, _ in NAMED] + ["trainer.accelerator", "hydra.launcher"]
    return any(w == key or w.startswith(key + ".") or key.startswith(w + ".") for w in watched)


def needed(configs: Iterable[DictConfig]) -> list[Needed]:
    """Every model and dataset the configs name by hub name or local path, once each."""
    found: dict[tuple[str, str], Needed] = {}
    for cfg in configs:
        for what, key, repo_type in NAMED:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            if not isinstance(value, str) or not value or value == "???":
                continue
            if what == "dataset" and Path(value).suffix in (".json", ".jsonl", ".parquet", ".csv", ".arrow"):
                repo_type = "file"
            entry = found.setdefault((repo_type, value), Needed(what, value, repo_type))
            entry.keys.add(key)
    return list(found.values())


def in_local_cache(item: Needed) -> bool:
    """Whether the Hugging Face cache (``HF_HOME``) already holds it: a model's config, or any download or
    prepared copy of a dataset."""
    if item.repo_type == "model":
        for filename in ("config.json", "tokenizer_config.json"):
            if isinstance(try_to_load_from_cache(item.name, filename), str):
                return True
        return False
    hub_copy = Path(constants.HF_HUB_CACHE) / ("datasets--" + item.name.replace("/", "--"))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets"))
    prepared = datasets_cache / item.name.replace("/", "___")
    return (hub_copy / "snapshots").is_dir() or prepared.is_dir()


def why_unavailable(item: Needed, hub: HfApi) -> str | None:
    """None when a job can read it; else why not."""
    path = Path(item.name).expanduser()
    if path.exists():
        return None
    if item.repo_type == "file" or looks_local(item.name):
        return "no such file or directory"
    if in_local_cache(item):
        return None
    if constants.HF_HUB_OFFLINE:
        return "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids the hub"
    try:
        hub.repo_info(item.name, repo_type=item.repo_type, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "gated on the hub: accept its terms on its page and log in (hf auth login)"
    except RepositoryNotFoundError:
        return "no such repository on the hub (check the name), and no local directory of that name"
    except Exception as error:  # any network failure: offline, DNS, proxy, timeout
        return f"not in the local Hugging Face cache, and the hub cannot be reached ({type(error).__name__})"
    return None


def missing_gpu(configs: list[DictConfig]) -> str | None:
    """trainer=gpu run on this machine (not submitted to a cluster) where torch sees no GPU."""
    config = configs[0]
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if "Slurm" in launcher:
        return None  # the login node needs none; the job's node is SLURM's to give
    wants = {str(OmegaConf.select(c, "trainer.accelerator", default="cpu")) for c in configs}
    if not wants & {"gpu", "cuda"}:
        return None
    import torch  # only a GPU config pays for importing torch here

    if torch.cuda.is_available():
        return None
    return (
        "trainer=gpu, but torch sees no GPU on this machine: run on a GPU node (or submit with cluster=<site>), or "
        "train on the CPU with trainer=cpu"
    )


def placeholder_cluster(config: DictConfig) -> str | None:
    cluster = OmegaConf.select(config, "hydra.runtime.choices.cluster", default=None)
    if cluster not in PLACEHOLDER_CLUSTERS:
        return None
    return (
        f"cluster={cluster} is a template, not a site (its partition and account are placeholders): copy "
        f"conf/cluster/{cluster}.yaml to conf/cluster/<site>.yaml, fill in your partition, account and time "
        "limit, and pass cluster=<site> (docs/clusters.md)"
    )


def problems(config: DictConfig, hub: HfApi | None = None) -> list[str]:
    """Every reason the sweep (or run) of ``config`` cannot start, each a line naming the fix; empty when none."""
    configs = job_configs(config)
    lines = [p for p in (placeholder_cluster(config), missing_slurm(config), missing_gpu(configs)) if p]
    hub = hub or HfApi()
    unavailable = [(item, why) for item in needed(configs) if (why := why_unavailable(item, hub)) is not None]
    if unavailable:
        lines.append(f"{len(unavailable)} model(s) or dataset(s) cannot be read on this machine:")
        for item, why in unavailable:
            lines.append(f"  {item.what} {item.name} ({', '.join(sorted(item.keys))}): {why}")
        fetch = [item for item, why in unavailable if "cache" in why]
        if fetch:
            lines.append("Fetch them on a machine with internet, into the Hugging Face cache the jobs will read:")
            lines += [f"  {item.fetch_command()}" for item in fetch]
            lines.append(
                "  (the cache is $HF_HOME, default ~/.cache/huggingface: on a cluster point HF_HOME at a shared "
                "directory, and set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 on compute nodes without internet); "
                "or set the keys above to local copies (model.name=/path/to/model)."
            )
    return lines


class Preflight(Callback):
    """:func:`refuse_what_cannot_start` before a run or a sweep; registered in ``conf/hydra/gpo_lab.yaml``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_what_cannot_start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_what_cannot_start(config)


def refuse_what_cannot_start(config: DictConfig) -> None:
    """Exit with code 2 and one message when :func:`problems` finds any, before any job or directory exists."""
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a rank that Lightning relaunched: its first rank checked
    found = problems(config)
    if not found:
        return
    mode = "sweep" if str(OmegaConf.select(config, "hydra.mode", default="")) == "RunMode.MULTIRUN" else "run"
    print(f"The {mode} cannot start (nothing was started):\n" + "\n".join(found), file=sys.stderr)
    sys.exit(EXIT_USAGE)
