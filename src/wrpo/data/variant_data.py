"""The training files of `wrpo ablate`'s variants, each made from what the recipe's own pipeline made, so
that a variant differs from WRPO in one thing (wrpo.ablation.variants says which variant trains on which):

    y_ws     SFT rows (prompt, y_ws) of every quadruple: SFT continued on the source responses
    better   SFT rows of whichever of y_ws and y_wt scored higher: rejection-sampling SFT
    sources  the quadruples built again with y_ws drawn from some sources only
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from wrpo.data.construct import BuildSummary, PairSettings, build_pairs, read_preference_prompts, response_rank
from wrpo.data.records import read_rows
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.errors import InputError


class VariantDataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    form: Literal["y_ws", "better", "sources"]
    output: Path
    quadruples: Path | None = None           # y_ws, better: the recipe's quadruples
    preference_prompts: Path | None = None   # sources: the recipe's preference prompts, the kept sources'
    kept_prompts: Path | None = None         # responses only written here, then paired as the recipe pairs
    target_scores: list[Path] = []
    sources: list[str] = []
    pairs: PairSettings = PairSettings()


def write_variant_data(spec: VariantDataSpec) -> Path | BuildSummary:
    if spec.form == "sources":
        return restricted_quadruples(spec)
    rows = [row for _, row in read_rows(spec.quadruples)]
    response = (lambda row: row["chosen_source"][0]) if spec.form == "y_ws" else better_response
    return write_jsonl_atomically(spec.output, [{"prompt_id": row["prompt_id"], "prompt": row["prompt"],
                                                 "response": response(row)} for row in rows])


def better_response(quadruple: dict) -> str:
    """y_wt where the reward scored it above y_ws, else y_ws."""
    meta = quadruple.get("meta") or {}
    if "chosen_target_score" not in meta or not meta.get("source_scores"):
        raise InputError(f"quadruple {quadruple['prompt_id']!r} has no scores in its meta (chosen_target_score, "
                         "source_scores): the rft variant needs them to pick the better response")
    # Ranked as build sft ranks (verified responses by correctness first).
    better_target = (response_rank(meta["chosen_target_score"], meta.get("chosen_target_correct"))
                     > response_rank(meta["source_scores"][0], meta.get("source_correct", [None])[0]))
    return quadruple["chosen_target"] if better_target else quadruple["chosen_source"][0]


def restricted_quadruples(spec: VariantDataSpec) -> BuildSummary:
    """The quadruples built again, from the preference prompts with only `spec.sources`' responses."""
    kept = set(spec.sources)
    rows = []
    for _, row in read_preference_prompts(spec.preference_prompts):
        responses = [response for response in row["source_responses"] if response["model"] in kept]
        if responses:
            rows.append({**row, "source_responses": responses})
    write_jsonl_atomically(spec.kept_prompts, rows)
    return build_pairs(spec.kept_prompts, spec.target_scores, spec.output,
                       **spec.pairs.model_dump(exclude={"target_samples"}))
