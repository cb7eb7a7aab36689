"""The default task: a language-model policy trained on a dataset of text preference pairs."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpo_lab.losses import GPOLoss
from gpo_lab.models.hf import disable_dropout
from gpo_lab.models.reference import LazyReference
from gpo_lab.models.reference_cache import ReferenceLogpCache, attach_reference_logps
from gpo_lab.module import GPOModule
from gpo_lab.optimisation import optimisation_options

log = logging.getLogger(__name__)


def build_language_task(cfg: DictConfig, loss: GPOLoss, beta: float) -> tuple[GPOModule, pl.LightningDataModule]:
    """The default task: a causal LM policy on a dataset of text preference pairs.

    The data is read, checked and tokenized before the model is loaded, so bad data fails in
    seconds. Other tasks (the tabular bandit, ...) provide a function of the same signature and
    name it in their experiment config as ``builder``.
    """
    tokenizer = instantiate(cfg.model.tokenizer)
    seq2seq = {"seq2seq": True} if cfg.model.get("seq2seq", False) else {}  # encoder-decoder batches
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed, **seq2seq)
    datamodule.setup("fit")
    policy = instantiate(cfg.model.policy, tokenizer=tokenizer)
    if cfg.model.get("disable_dropout", True):
        disable_dropout(policy)
    if cfg.model.get("gradient_checkpointing", False):  # recompute activations in the backward pass: less memory
        kwargs = {"use_reentrant": False}
        if hasattr(policy, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
            policy.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    reference = instantiate(cfg.reference, policy=policy, tokenizer=tokenizer)
    cache = cfg.get("reference_cache")
    if seq2seq and cache is not None and cache.get("enabled", False):
        log.info("reference_cache scores causal rows; an encoder-decoder reference runs at every step instead.")
    elif cache is not None and cache.get("enabled", False):
        attach_reference_logps(datamodule, reference, ReferenceLogpCache(cache.get("dir")), cache.get("batch_size", 16))
        reference = LazyReference(reference)  # training reads the cached log-probs; evaluations may still use it
    module = GPOModule(policy, reference, loss, beta, **optimisation_options(cfg))
    return module, datamodule
