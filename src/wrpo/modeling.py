"""Loading models and tokenizers from a local folder (or a Hub id), with one-line errors."""

from __future__ import annotations

import json
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


def refuse_own_code(name_or_path: str, trust_remote_code: bool) -> None:
    """A model that ships its own code (`auto_map` in its config.json or tokenizer_config.json, the code beside
    it: ArmoRM's modeling_custom.py) is refused in one line before any of its code can run, unless allowed. A
    Hub id's config is not read here: transformers refuses it the same way (checked where it loads)."""
    folder = Path(name_or_path).expanduser()
    if trust_remote_code or not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        auto_map = json.loads(path.read_text()).get("auto_map") if path.is_file() else None
        if auto_map:
            modules = sorted({str(entry).split(".")[0] + ".py" for value in auto_map.values()
                              for entry in (value if isinstance(value, list) else [value]) if entry})
            raise InputError(f"the model runs its own code ({', '.join(modules)}, named by {name}'s auto_map); "
                             f"allow it with {OWN_CODE_HINT}", name_or_path)


# How a user allows a model's own code, wherever they name the model.
OWN_CODE_HINT = "--trust-remote-code (in a recipe: reward.trust_remote_code: true)"


def own_code_refused(error: Exception) -> bool:
    """transformers' refusal to run a Hub model's own code without trust_remote_code."""
    return "trust_remote_code" in str(error)


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
