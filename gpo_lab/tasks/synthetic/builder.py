"""The experiment's ``builder``: SFT policy (cached), offline pairs (cached), then the GPO module."""

from __future__ import annotations

import datasets
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.tasks.common import online_pairs, record_fast_paths, with_reference_cache
from gpo_lab.tasks.synthetic.pairs import PairSettings, offline_pairs
from gpo_lab.tasks.synthetic.sft import SFTSettings, sft_policy
from gpo_lab.training.gpo_module import GPOModule
from gpo_lab.training.optimizer import optimization_options


def build_synthetic_task(
    cfg: DictConfig, loss: PreferenceLoss, beta: float
) -> tuple[GPOModule, pl.LightningDataModule]:
    """pi_ref = the SFT policy; mu = pairs labelled by the golden reward; validation = held-out prompts.

    The data config names the data module (``_target_``) and its batching options; the pairs
    are passed in as its ``dataset`` (train and validation splits).
    """
    synthetic = cfg.synthetic
    if synthetic.get("num_threads"):
        # Models this small run faster on one thread: synchronising threads costs more than it
        # saves, and far more when other processes share the cores.
        torch.set_num_threads(synthetic.num_threads)
    task = instantiate(synthetic.task)
    behaviour = instantiate(synthetic.behaviour)
    tokenizer = instantiate(cfg.model.tokenizer)
    sft = SFTSettings(**OmegaConf.to_container(synthetic.sft, resolve=True))
    policy, sft_info = sft_policy(task, behaviour, tokenizer, cfg.model.policy, sft, synthetic.cache_dir)
    pairs = PairSettings(**OmegaConf.to_container(synthetic.pairs, resolve=True))
    splits, pair_info = offline_pairs(
        task, behaviour, policy, tokenizer, pairs, sft_info["sft_key"], synthetic.cache_dir
    )
    options = OmegaConf.to_container(cfg.data, resolve=True)
    data_class = get_class(options.pop("_target_"))
    options.pop("dataset", None)
    datamodule = data_class(dataset=datasets.DatasetDict(splits), tokenizer=tokenizer, seed=cfg.seed, **options)
    datamodule.stats |= {k: v for k, v in (sft_info | pair_info).items() if k != "sft_path"}
    datamodule.eval_prompts, datamodule.test_prompts = task.evaluation_prompts(
        pairs.num_eval_prompts, pairs.held_out_fraction, pairs.seed
    )
    policy.train()
    reference = instantiate(cfg.reference, policy=policy, tokenizer=tokenizer)
    datamodule.setup("fit")
    record_fast_paths(cfg, datamodule, policy, reference)
    reference = with_reference_cache(cfg, datamodule, reference)
    online = online_pairs(cfg, datamodule)
    module = GPOModule(policy, reference, loss, beta, **optimization_options(cfg), online=online)
    return module, datamodule
