"""Turning quadruples into token ids with the model's chat template, and truncating them.

Prompt and response are tokenised separately so that the response's tokens are exactly those the
model is scored on: the response text is what the chat template adds after the generation prompt
(end-of-turn tokens included). Without a chat template the prompt is plain text and the response is
followed by the EOS token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wrpo.data.records import Prompt, Quadruple
from wrpo.errors import InputError


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def render_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat template's text; a template that refuses the conversation (many reject a system
    turn or roles that do not alternate) is an InputError, which callers tie to a file and line."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    except TemplateError as error:
        raise InputError(f"the chat template rejects this conversation ({error})") from None


def encode_prompt(tokenizer, prompt: Prompt) -> tuple[list[int], str]:
    """(token ids, text) of a prompt as the model sees it before answering: the chat template with
    its generation prompt, or without a template the plain text (with BOS if the tokenizer adds one).
    Training and sampling both use this, so a model is trained on exactly what it is sampled with."""
    if getattr(tokenizer, "chat_template", None) is not None:
        text = render_chat(tokenizer, as_messages(prompt), add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"], text
    text = plain_prompt(prompt)
    return tokenizer(text, add_special_tokens=True)["input_ids"], text


def plain_prompt(prompt: Prompt) -> str:
    """The prompt as plain text, for tokenizers without a chat template: training, SFT and scoring
    all use this one, so a model is trained and judged on the text it is sampled with."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


@dataclass(frozen=True)
class EncodedQuadruple:
    prompt_ids: list[int]
    source_ids: list[list[int]]   # up to top_k_sources responses, best first
    target_ids: list[int]
    rejected_ids: list[int]
    source_scores: list[float] | None
    # Summed log-probs of [sources..., target, rejected] under the reference, once computed.
    reference_logps: tuple[float, ...] | None = None

    @property
    def length(self) -> int:
        """Tokens the example costs in a batch (for grouping by length)."""
        return len(self.prompt_ids) + max(len(ids) for ids in (*self.source_ids, self.target_ids, self.rejected_ids))


@dataclass
class TruncationReport:
    rows: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0
    responses: int = 0

    def describe(self) -> str:
        return (f"{self.rows} rows; prompts cut from the left: {self.prompts_truncated}; "
                f"responses cut from the right: {self.responses_truncated} of {self.responses}")


@dataclass
class QuadrupleEncoder:
    tokenizer: object
    max_length: int
    max_prompt_length: int
    top_k_sources: int = 1
    report: TruncationReport = field(default_factory=TruncationReport)

    def __post_init__(self):
        # max_prompt_length < max_length is checked where the settings are built (WRPOConfig).
        self.has_chat_template = getattr(self.tokenizer, "chat_template", None) is not None

    def encode(self, quadruple: Quadruple) -> EncodedQuadruple:
        prompt_ids, prompt_text = encode_prompt(self.tokenizer, quadruple.prompt)
        if len(prompt_ids) > self.max_prompt_length:
            prompt_ids = prompt_ids[-self.max_prompt_length:]
            self.report.prompts_truncated += 1
        budget = self.max_length - len(prompt_ids)
        sources = quadruple.chosen_source[: self.top_k_sources]
        scores = quadruple.source_scores[: self.top_k_sources] if quadruple.source_scores else None
        encoded = [self._response(quadruple.prompt, prompt_text, text, budget)
                   for text in (*sources, quadruple.chosen_target, quadruple.rejected)]
        self.report.rows += 1
        return EncodedQuadruple(prompt_ids=prompt_ids, source_ids=encoded[:-2], target_ids=encoded[-2],
                                rejected_ids=encoded[-1], source_scores=scores)


    def _response(self, prompt: Prompt, prompt_text: str, response: str, budget: int) -> list[int]:
        eos = self.tokenizer.eos_token or ""
        if self.has_chat_template:
            full = render_chat(self.tokenizer, as_messages(prompt) + [{"role": "assistant", "content": response}])
            # A template that rewrites earlier turns (some strip past reasoning) breaks the prefix:
            # then score the bare response and EOS, as without a template.
            text = full[len(prompt_text):] if full.startswith(prompt_text) else response + eos
        else:
            text = response + eos
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        self.report.responses += 1
        if not ids:
            raise InputError(f"a response encodes to no tokens: {response[:40]!r}")
        if len(ids) > budget:
            self.report.responses_truncated += 1
            ids = ids[:budget]
        return ids
