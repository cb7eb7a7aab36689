"""The frozen reference policy pi_ref: how it is obtained, and the stand-ins that avoid a copy.

- ``frozen_copy``: a separate frozen copy of the initial policy (``reference=copy``);
- ``separate_model``: another checkpoint, built from its own model config (``reference=model``);
- :class:`AdaptersDisabled`: a LoRA policy read with its adapters off (``reference=adapters_disabled``):
  only the adapters train, so the base model is pi_ref and no second copy of the weights is held
  (refused, at start-up, for the peft options under which the base model is not the initial policy);
- :class:`LazyReference`: the reference when its log-probs on the pairs are cached, loaded only
  if an evaluation (KL on samples) needs it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpo_lab.errors import ConfigError
from gpo_lab.models.fingerprints import weights_fingerprint
from gpo_lab.models.hf import cache_keyword
from gpo_lab.models.lora import ADAPTER_PARAMETERS, adapters_off_problems, is_lora_model

log = logging.getLogger(__name__)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no gradients: the reference never trains and never drops out."""
    model.eval()
    model.requires_grad_(False)
    return model


def frozen_copy(policy: torch.nn.Module, tokenizer=None) -> torch.nn.Module:
    """A separate copy of the initial policy (the usual setting: pi_ref is the SFT model).

    A LoRA policy is not copied: its base model, read with the adapters disabled, is the reference,
    unless its peft options change the base model (trained biases, PiSSA, ...): then it is copied whole.
    """
    if is_lora_model(policy):
        problems = adapters_off_problems(policy)
        if not problems:
            return AdaptersDisabled(policy)
        log.warning(
            "reference=copy copies the whole LoRA policy (its base model is not pi_ref): %s.", "; ".join(problems)
        )
    return freeze(copy.deepcopy(policy))


def separate_model(policy: torch.nn.Module, tokenizer, model: DictConfig) -> torch.nn.Module:
    """A reference that differs from the initial policy (another checkpoint), built from its own model config."""
    return freeze(instantiate(model, tokenizer=tokenizer))


class _AdaptersOff:
    """Calls a part of the policy (its decoder, its output layer) with the adapters switched off."""

    def __init__(self, reference: AdaptersDisabled, part):
        self.reference, self.part = reference, part

    def __call__(self, *args, **kwargs):
        with self.reference.adapters_off():
            return self.part(*args, **kwargs)


class AdaptersDisabled(torch.nn.Module):
    """pi_ref for a LoRA policy: every call runs the policy's base model, adapters disabled,
    without gradients and in eval mode.

    The policy is held outside the module tree, so the reference owns no parameters (nothing is
    counted, saved or moved twice) and switching it to eval leaves the policy's mode alone.
    ``parameters()`` yields the shared weights, for device and dtype look-ups; freezing the
    reference (``requires_grad_(False)``) leaves them alone.
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        if not is_lora_model(policy):
            raise ConfigError(
                "reference=adapters_disabled needs a LoRA policy (model=lora); for a full model use reference=copy."
            )
        problems = adapters_off_problems(policy)
        if problems:
            raise ConfigError(
                "reference=adapters_disabled would not be the initial policy: "
                + "; ".join(problems)
                + ". Or use reference=copy, which copies the whole policy."
            )
        self._policy = (policy,)
        self._cache_keyword = cache_keyword(policy)

    @property
    def policy(self) -> torch.nn.Module:
        return self._policy[0]

    @property
    def config(self):
        return self.policy.config

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        policy = self.policy
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad(), policy.disable_adapter():
                yield
        finally:
            policy.train(was_training)

    def forward(self, *args, cache=None, **kwargs):
        """The base model's forward. ``cache`` (the KV cache) is passed on under the name the
        model takes it by (``cache`` from transformers 5.2x on, ``past_key_values`` before)."""
        if cache is not None:
            kwargs[self._cache_keyword] = cache
        with self.adapters_off():
            return self.policy(*args, **kwargs)

    def get_decoder(self):
        return _AdaptersOff(self, self.policy.get_decoder())

    def get_output_embeddings(self):
        layer = self.policy.get_output_embeddings()
        return None if layer is None else _AdaptersOff(self, layer)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self.policy.parameters(recurse)

    def requires_grad_(self, requires_grad: bool = True) -> AdaptersDisabled:
        """Nothing to freeze: the reference always runs without gradients, and the weights that
        ``parameters()`` shows are the policy's, whose adapters must keep training."""
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The gradients of the shared weights belong to the policy's optimizer step."""

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights this reference computes with (the base model's, adapters left out), e.g. to
        fingerprint it; its own ``state_dict()`` is empty, as it owns nothing."""
        return {
            name: tensor
            for name, tensor in self.policy.state_dict().items()
            if not any(part in name for part in ADAPTER_PARAMETERS)  # what trains, modules_to_save copies included
        }


def adapters_disabled(policy: torch.nn.Module, tokenizer=None) -> AdaptersDisabled:
    """The ``reference`` factory for LoRA policies (conf/reference/adapters_disabled.yaml)."""
    return AdaptersDisabled(policy)


class LazyReference(torch.nn.Module):
    """Stands in for pi_ref when its log-probs on the pairs are cached: training steps never touch it.

    ``source`` is the frozen model, kept where it is (off the accelerator) until first use, or a
    function that builds it then (nothing is loaded unless an evaluation, such as KL on samples,
    needs the reference). On first use it is frozen and moved to the device of the module that
    owns it; attribute access and calls go to the model.
    """

    def __init__(self, source: torch.nn.Module | Callable[[], torch.nn.Module], fingerprint: str | None = None):
        super().__init__()
        self._pending = [source]  # in a list, so a module source is not registered (nor moved) before first use
        self._fingerprint = fingerprint
        self.register_buffer("_device_marker", torch.empty(0), persistent=False)
        self.train(False)

    @property
    def is_loaded(self) -> bool:
        return "_model" in self._modules

    @property
    def loaded(self) -> torch.nn.Module:
        if not self.is_loaded:
            source = self._pending[0]
            model = source if isinstance(source, torch.nn.Module) else source()
            if self._fingerprint is not None and weights_fingerprint(model) != self._fingerprint:
                raise RuntimeError(
                    "The reference built on demand differs from the one whose log-probs were cached; "
                    "its source must rebuild the same weights."
                )
            model.eval()
            model.requires_grad_(False)
            self._pending.clear()
            self._modules["_model"] = model.to(self._device_marker.device)
        return self._modules["_model"]

    def train(self, mode: bool = True) -> LazyReference:
        """A frozen reference never leaves eval mode (no dropout), whatever its owner switches to."""
        return super().train(False)

    def __call__(self, *args, **kwargs):
        return self.loaded(*args, **kwargs)

    @property
    def forward(self):
        """The model's own forward, so that inspecting its signature sees the real arguments."""
        return self.loaded.forward

    def parameters(self, recurse: bool = True):
        return self.loaded.parameters(recurse)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name in ("loaded", "is_loaded"):
                raise
            return getattr(self.loaded, name)
