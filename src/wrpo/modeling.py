"""Loading models and tokenizers from a local folder (or a Hub id), with one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

from wrpo.errors import InputError

# "org/name" or "name": what could be a Hub id rather than a local folder.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_location(name_or_path: str) -> None:
    """Fails with a one-line error for a local path that does not exist (Hub ids are left to the loader)."""
    if Path(name_or_path).expanduser().exists():
        return
    if name_or_path.startswith((".", "/", "~")) or not _HUB_ID.match(name_or_path):
        raise InputError("model folder does not exist", name_or_path)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The model's tokenizer, given a pad token (its EOS) when it has none."""
    from transformers import AutoTokenizer

    check_model_location(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise InputError(f"no tokenizer could be loaded ({_first_line(error)})", name_or_path) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype=None, quantization_config=None):
    from transformers import AutoModelForCausalLM

    check_model_location(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or "auto",
                                                    quantization_config=quantization_config)
    except (OSError, ValueError) as error:
        raise InputError(f"no causal language model could be loaded ({_first_line(error)})", name_or_path) from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
