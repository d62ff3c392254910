"""What an LLM judge is and how it is asked (wrpo.evaluation.llm_judge asks it): a module of its own so that
`wrpo eval` makes its --judge-* flags from these fields without importing torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from wrpo.files import text_fingerprint

TEMPLATE = """\
You are a careful assistant who compares the outputs of two AI models and selects the one a person \
would prefer for its quality and its relevance to the instruction.

## Instruction

{instruction}

## Output A

{output_a}

## Output B

{output_b}

## Task

Which output is better, A or B? Judge how well each output follows the instruction, not its length \
or its position. Answer with the single letter of the better output, A or B, and nothing else.

## Better output
"""

class LLMJudge(BaseModel):
    """A judge model on an OpenAI-compatible server, and how it is asked; `wrpo eval`'s --judge-* flags are
    made from these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description=(
        "LLM judge: the judge model's name on an OpenAI-compatible server (--judge-base-url); it compares each "
        "answer with the baseline's, in both orders."))
    base_url: str | None = Field(default=None, description="The LLM judge's server, e.g. http://localhost:8000/v1.")
    api_key_env: str | None = Field(default=None, description=(
        "The environment variable holding the LLM judge's API key."))
    concurrency: int = Field(default=8, description="LLM judge requests in flight at once.")
    template: str = Field(default=TEMPLATE, description="The prompt, with {instruction}, {output_a} and {output_b}.")
    max_tokens: int = Field(default=16, description="The longest reply asked for.")

    def cache_file(self, output_dir: str | Path) -> Path:
        # The model, the template and the replies' length decide the judgements; the server does not.
        name = text_fingerprint(self.model, self.template, str(self.max_tokens))
        return Path(output_dir) / "judgements" / f"{name}.jsonl"
