"""How the frozen reference policy pi_ref is obtained from the run's configuration."""

from __future__ import annotations

import copy

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients: the reference never trains and never drops out."""
    model.eval()
    model.requires_grad_(False)
    return model


def frozen_copy(policy: torch.nn.Module, tokenizer=None) -> torch.nn.Module:
    """A separate copy of the initial policy (the usual setting: pi_ref is the SFT model).

    A LoRA policy is not copied: its base model, read with the adapters disabled, is the reference.
    """
    from gpo_lab.lora import AdaptersDisabled, is_lora_model

    if is_lora_model(policy):
        return AdaptersDisabled(policy)
    return freeze(copy.deepcopy(policy))


def separate_model(policy: torch.nn.Module, tokenizer, model: DictConfig) -> torch.nn.Module:
    """A reference that differs from the initial policy (another checkpoint), built from its own model config."""
    return freeze(instantiate(model, tokenizer=tokenizer))
