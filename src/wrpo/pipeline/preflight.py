"""What `wrpo run` checks before any stage runs, so that a mistake costs seconds rather than the hours
of sampling that come before the stage it would stop: the prompts, every model the recipe names (its
folder, tokenizer and chat template on the first prompt), an OpenAI-compatible source's API-key
variable, and the scorer (imported and called once, or its folder loaded). Every problem is reported
at once. The recipe's own settings were checked when it loaded."""

from __future__ import annotations

import os

from wrpo.data.prompts import check_held_out, read_prompts
from wrpo.data.tokenize import encode_prompt
from wrpo.errors import InputError, Problems
from wrpo.modeling import load_tokenizer
from wrpo.pipeline.recipe import ModelSpec, Recipe


def check_recipe_inputs(recipe: Recipe) -> None:
    """Raises one InputError listing every problem found."""
    from wrpo.reward.scorers import check_scorer  # torch: imported by a run, not by `wrpo --help`

    problems = Problems()
    rows = problems.check(read_prompts, recipe.prompts)
    for spec in [*recipe.sources, recipe.target]:
        problems.check(_check_model, spec, rows[0].prompt if rows else None)
    if rows:
        problems.check(check_scorer, recipe.reward.scorer, rows[0].prompt, recipe.reward.trust_remote_code,
                       rows[0].meta)
        first_of = {}
        for row in rows:
            first_of.setdefault(row.category, row)
        for location, category in _categories_named(recipe):
            if category not in first_of:
                known = ", ".join(sorted(c for c in first_of if c is not None)) or "none"
                problems.add(str(InputError(f"{'.'.join(map(str, location))}: no prompt of {recipe.prompts} has the "
                                            f"category {category!r} (its categories: {known})", recipe.path,
                                            recipe.line(*location))))
            elif location[-2] == "verifiers":  # its first prompt holds the gold the verifier reads
                first = first_of[category]
                problems.check(check_scorer, recipe.reward.verifiers[category], first.prompt, False, first.meta)
    if recipe.checkpoint_choice is not None:
        problems.check(check_held_out, recipe.prompts, recipe.checkpoint_choice.eval_prompts)
    problems.raise_if_any()


def _categories_named(recipe: Recipe) -> list[tuple[tuple, str]]:
    """(where in the recipe, category) of every category a setting names."""
    models = [(("sources", index), spec) for index, spec in enumerate(recipe.sources)] + [(("target",), recipe.target)]
    sampling = [(("sampling",), recipe.sampling)] + [((*where, "sampling"), spec.sampling)
                                                     for where, spec in models if spec.sampling is not None]
    return ([((*where, "by_category", category), category) for where, settings in sampling
             for category in settings.by_category or {}]
            + [(("sources", index, "categories", position), category) for index, spec in enumerate(recipe.sources)
               for position, category in enumerate(spec.categories or [])]
            + [(("split", "sft_fraction_by_category", category), category)
               for category in recipe.split.sft_fraction_by_category]
            + [(("reward", "verifiers", category), category) for category in recipe.reward.verifiers])


def _check_model(spec: ModelSpec, prompt) -> None:
    if spec.backend == "openai":  # the server holds the model and its template
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise InputError(f"{spec.name}: the environment variable {spec.api_key_env} (api_key_env) is not set")
        return
    tokenizer = load_tokenizer(spec.model)
    if prompt is not None:
        try:
            encode_prompt(tokenizer, prompt)
        except InputError as error:
            raise InputError(f"{spec.name}: {error.message} on the first prompt", spec.model) from None
