"""transformers' names that changed within the range wrpo supports (5.16.1, what current vLLM releases accept,
to the newest), picked here by what the installed version offers, and only here."""

from __future__ import annotations

import dataclasses

from transformers import TrainingArguments
from transformers.modeling_outputs import CausalLMOutputWithPast

# The key/value cache a forward takes and returns: `cache` from 5.24, `past_key_values` before (removed in 5.40).
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
# Activation checkpointing's setting: `activation_checkpointing` from 5.2x, `gradient_checkpointing` before.
NAMES_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}


def cache_of(output):
    """The key/value cache of a forward's output."""
    return getattr(output, CACHE)


def checkpointing_for_this_transformers(config) -> None:
    """Where transformers knows only `gradient_checkpointing`, a config's `activation_checkpointing` (wrpo's own
    field there) is passed on to it before TrainingArguments reads it."""
    if not NAMES_ACTIVATION_CHECKPOINTING and config.activation_checkpointing is not None:
        config.gradient_checkpointing = bool(config.activation_checkpointing)


def checkpointing_on(config) -> bool:
    """Whether the Trainer will checkpoint activations under this config, by either name."""
    return bool(config.activation_checkpointing if NAMES_ACTIVATION_CHECKPOINTING else config.gradient_checkpointing)
