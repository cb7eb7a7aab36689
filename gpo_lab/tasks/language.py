"""The default task: a language-model policy trained on a dataset of text preference pairs."""

from __future__ import annotations

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.models.hf import disable_dropout, is_encoder_decoder
from gpo_lab.scoring.chunks import AUTO, set_logprob_chunk
from gpo_lab.tasks.common import online_pairs, record_fast_paths, reference_cache_not_used, with_reference_cache
from gpo_lab.training.gpo_module import GPOModule
from gpo_lab.training.optimizer import optimization_options

ENCODER_DECODER_CACHE = "the reference cache scores causal rows; an encoder-decoder reference runs at every step"


def build_language_task(cfg: DictConfig, loss: PreferenceLoss, beta: float) -> tuple[GPOModule, pl.LightningDataModule]:
    """The default task: a causal or encoder-decoder LM policy on a dataset of text preference pairs.

    The data is read, checked and tokenized before the model is loaded, so bad data fails in
    seconds; the model then says whether it is an encoder-decoder, which only changes how pairs
    are batched. Other tasks (the tabular bandit, ...) provide a function of the same signature
    and name it in their experiment config as ``builder``.
    """
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    datamodule.setup("fit")
    policy = instantiate(cfg.model.policy, tokenizer=tokenizer)
    encoder_decoder = is_encoder_decoder(policy)
    if encoder_decoder:
        datamodule.use_encoder_decoder_batches()
    if cfg.model.get("disable_dropout", True):
        disable_dropout(policy)
    if cfg.model.get("gradient_checkpointing", False):  # recompute activations in the backward pass: less memory
        kwargs = {"use_reentrant": False}
        if hasattr(policy, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
            policy.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    reference = instantiate(cfg.reference, policy=policy, tokenizer=tokenizer)
    for model in (policy, reference):  # positions projected onto the vocabulary at a time
        set_logprob_chunk(model, cfg.get("logprob_chunk", AUTO))
    record_fast_paths(cfg, datamodule, policy, reference)
    if encoder_decoder:
        reference_cache_not_used(cfg, datamodule.stats, ENCODER_DECODER_CACHE)
    else:
        reference = with_reference_cache(cfg, datamodule, reference)
    online = online_pairs(cfg, datamodule)
    module = GPOModule(policy, reference, loss, beta, **optimization_options(cfg), online=online)
    return module, datamodule
