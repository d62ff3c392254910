"""Reward scorers: a Hugging Face reward model, or a Python function for verifiable tasks.

A scorer maps a batch of (prompt, response) pairs to one float each; it is also handed each
sampled row's "meta" (the prompt row's other fields), which only a Python scorer may use.
- "pkg.module:function": function(prompt, response) -> float, imported as is; a function that also
  takes `meta` is called function(prompt, response, meta=the row's meta, {} when it has none): that
  is where a verifiable scorer (wrpo.reward.verifiable) finds its gold answer or tests.
- a model folder (or Hub id): AutoModelForSequenceClassification, its own tokenizer and chat template;
  the reward is the output's `.score` where the model returns one (ArmoRM) and logit 0 otherwise.
  Custom model code runs only with trust_remote_code.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import torch

from wrpo.data.records import Prompt
from wrpo.data.tokenize import as_messages, plain_prompt, render_chat
from wrpo.errors import InputError
from wrpo.modeling import OWN_CODE_HINT, check_model_location, own_code_refused, refuse_own_code


class FunctionScorer:
    def __init__(self, spec: str):
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise InputError(f"cannot import scorer module ({error})", spec) from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise InputError(f"module {module_name} has no function {attribute!r}", spec)
        self.function: Callable[..., float] = function
        self.takes_meta = _has_parameter(function, "meta")
        self.name = spec

    def __call__(self, prompts: list[Prompt], responses: list[str], metas: list[dict] | None = None) -> list[float]:
        if not self.takes_meta:
            return [self.function(prompt, response) for prompt, response in zip(prompts, responses, strict=True)]
        metas = metas if metas is not None else [{}] * len(prompts)
        return [self.function(prompt, response, meta=meta)
                for prompt, response, meta in zip(prompts, responses, metas, strict=True)]


def _has_parameter(function: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature: they take (prompt, response)
        return False


class RewardModelScorer:
    def __init__(self, model_dir: str, trust_remote_code: bool = False, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        check_model_location(model_dir)
        refuse_own_code(model_dir, trust_remote_code)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, dtype=dtype, trust_remote_code=trust_remote_code).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise _load_error(error, model_dir) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Sequence classifiers read their score at the last non-pad token, found through this id.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.name = Path(model_dir).name

    def __call__(self, prompts: list[Prompt], responses: list[str], metas: list[dict] | None = None) -> list[float]:
        texts = [self._render(prompt, response) for prompt, response in zip(prompts, responses, strict=True)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        with torch.no_grad():
            output = self.model(**batch)
        score = getattr(output, "score", None)
        rewards = score if score is not None else output.logits[:, 0]
        return rewards.reshape(len(texts), -1)[:, 0].float().tolist()

    def _render(self, prompt: Prompt, response: str) -> str:
        messages = as_messages(prompt) + [{"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None) is not None:
            return render_chat(self.tokenizer, messages)
        # Without a template: the prompt's plain text as the policy sees it, then the response and EOS.
        bos = self.tokenizer.bos_token or ""
        return bos + plain_prompt(prompt) + "\n" + response + (self.tokenizer.eos_token or "")


def load_scorer(spec: str, trust_remote_code: bool = False, device: str | None = None):
    """A folder that exists is a reward model; "module:function" is a Python scorer."""
    if not Path(spec).exists() and ":" in spec:
        return FunctionScorer(spec)
    return RewardModelScorer(spec, trust_remote_code=trust_remote_code, device=device)


def check_scorer(spec: str, prompt: Prompt, trust_remote_code: bool = False, meta: dict | None = None) -> None:
    """What can be known of a scorer before hours of sampling: a Python scorer imports and returns a
    finite number for one (prompt, response), given the prompt row's `meta` (so a verifiable scorer
    finds, or says it misses, its gold field); a reward model's folder, config and tokenizer load.
    Raises InputError naming the scorer."""
    import math

    if not Path(spec).exists() and ":" in spec:
        scorer = FunctionScorer(spec)
        try:
            value = scorer([prompt], ["a response"], [meta or {}])[0]
        except Exception as error:  # noqa: BLE001 -- a user's scorer may raise anything; name it
            raise InputError(f"the scorer fails on a test response ({type(error).__name__}: {error})", spec) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"the scorer returned {value!r} for a test response, not a finite number", spec)
        return
    from transformers import AutoConfig, AutoTokenizer

    check_model_location(spec)
    refuse_own_code(spec, trust_remote_code)
    try:
        AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
        AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise _load_error(error, spec) from None


def _load_error(error: Exception, location: str) -> InputError:
    if own_code_refused(error):
        return InputError(f"the model runs its own code; allow it with {OWN_CODE_HINT}", location)
    return InputError(f"no reward model could be loaded ({str(error).strip().splitlines()[0]})", location)
