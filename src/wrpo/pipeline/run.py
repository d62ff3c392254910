"""`wrpo run RECIPE`: every stage of the paper's pipeline, in order, each skipped when its outputs
are complete and its inputs and settings unchanged.

    sample/<source>  score/<source>    for every source model
    build-sft        y_ws per prompt; SFT set and preference prompts
    sft              target -> target-sft
    sample/target-sft, score/target-sft
    build-pairs      quadruples (y_ws, y_wt, y_l)
    wrpo             target-sft -> target-sft-wrpo

A stage's fingerprint hashes its settings and the content of its inputs (files by content, model
folders by file names, sizes and times). workdir/.wrpo/stages/NAME.json records the fingerprint a
stage started and finished with: a finished stage with the same fingerprint is skipped; an
unfinished one resumes (its own outputs are resumable); one whose fingerprint changed is redone
from scratch, its stale outputs removed first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wrpo.data.construct import build_pairs, build_sft
from wrpo.files import path_fingerprint, write_text_atomically
from wrpo.generation.sample import sample
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.locks import output_lock
from wrpo.pipeline.preflight import check_recipe_inputs
from wrpo.pipeline.recipe import TRAINING_OUTPUTS, ModelSpec, Recipe, load_recipe, training_config
from wrpo.progress import say, stage_log
from wrpo.reward.score import score
from wrpo.training.run import train
from wrpo.training.sft import sft


@dataclass
class Stage:
    name: str
    inputs: list[str]        # files, folders or Hub ids whose content decides the result
    settings: dict           # JSON-able
    outputs: list[Path]
    run: Callable[[], object]


def stage_fingerprint(stage: Stage) -> str:
    parts = [json.dumps(stage.settings, sort_keys=True, default=str)] + [path_fingerprint(i) for i in stage.inputs]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def plan(recipe: Recipe) -> list[Stage]:
    work = recipe.workdir
    reward = recipe.reward

    def sampling_stage(spec: ModelSpec, model: str, prompts: Path, output: Path, settings: SamplingSettings) -> Stage:
        backend = BackendSettings(**spec.model_dump(include=set(BackendSettings.model_fields)))
        return Stage(f"sample/{output.relative_to(work / 'samples').with_suffix('')}", [model, str(prompts)],
                     {"sampling": settings.model_dump(), "backend": spec.backend, "name": output.stem,
                      **({"options": backend.options} if backend.options else {})},
                     [output], lambda: sample(model, prompts, output, settings, backend=backend, name=output.stem))

    def scoring_stage(samples: Path, output: Path) -> Stage:
        return Stage(f"score/{output.relative_to(work / 'scores').with_suffix('')}", [str(samples), reward.scorer],
                     reward.model_dump(), [output],
                     lambda: score([samples], reward.scorer, output, batch_size=reward.batch_size,
                                   trust_remote_code=reward.trust_remote_code))

    stages: list[Stage] = []
    source_scores = []
    for source in recipe.sources:
        samples = work / "samples" / "sources" / f"{source.name}.jsonl"
        scores = work / "scores" / "sources" / f"{source.name}.jsonl"
        stages += [sampling_stage(source, source.model, recipe.prompts, samples, recipe.sampling),
                   scoring_stage(samples, scores)]
        source_scores.append(scores)

    sft_data, preference_prompts = work / "data" / "sft.jsonl", work / "data" / "preference_prompts.jsonl"
    stages.append(Stage("build-sft", [str(p) for p in source_scores], recipe.split.model_dump(),
                        [sft_data, preference_prompts],
                        lambda: build_sft(source_scores, sft_data, preference_prompts,
                                          sft_fraction=recipe.split.sft_fraction, seed=recipe.split.seed)))

    target_sft = work / TRAINING_OUTPUTS["sft"]
    stages.append(Stage("sft", [recipe.target.model, str(sft_data)], recipe.sft, [target_sft],
                        lambda: sft(recipe.target.model, sft_data, training_config(recipe, "sft"))))

    target_samples = work / "samples" / "target-sft.jsonl"
    target_scores = work / "scores" / "target-sft.jsonl"
    stages += [sampling_stage(recipe.target, str(target_sft), preference_prompts, target_samples,
                              recipe.target_sampling or recipe.sampling),
               scoring_stage(target_samples, target_scores)]

    quadruples = work / "data" / "quadruples.jsonl"
    stages.append(Stage("build-pairs", [str(preference_prompts), str(target_scores)], recipe.pairs.model_dump(),
                        [quadruples], lambda: build_pairs(preference_prompts, [target_scores], quadruples,
                                                          top_k_sources=recipe.pairs.top_k_sources)))

    target_wrpo = work / TRAINING_OUTPUTS["wrpo"]
    stages.append(Stage("wrpo", [str(target_sft), str(quadruples)], recipe.wrpo, [target_wrpo],
                        lambda: train(str(target_sft), quadruples, training_config(recipe, "wrpo"))))
    return stages


def _remove(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".partial")):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def run_recipe(recipe_path: str | Path) -> dict[str, str]:
    """Runs the stages that are not done; returns each stage's status: ran, resumed, redone or skipped."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    with output_lock(recipe.workdir):  # one `wrpo run` per workdir at a time
        check_recipe_inputs(recipe)
        return run_stages(plan(recipe), recipe.workdir / ".wrpo" / "stages", recipe.workdir / "logs")


def run_stages(stages: list[Stage], manifests: Path, logs: Path) -> dict[str, str]:
    """Runs each stage unless its manifest in `manifests` says it finished with today's fingerprint;
    what a stage logs goes to logs/STAGE.log."""
    statuses = {}
    for number, stage in enumerate(stages, start=1):
        manifest_path = manifests / f"{_file_name(stage)}.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        fingerprint = stage_fingerprint(stage)
        header = f"[{number}/{len(stages)}] {stage.name}"
        if manifest and manifest["fingerprint"] == fingerprint and manifest["complete"] \
                and all(output.exists() for output in stage.outputs):
            say(f"{header}: up to date, skipped")
            statuses[stage.name] = "skipped"
            continue
        if manifest and manifest["fingerprint"] != fingerprint:
            status = "redone"
            for output in stage.outputs:
                _remove(output)
        else:
            status = "resumed" if manifest else "ran"
        with stage_log(logs / f"{_file_name(stage)}.log") as log_file:
            say(f"[bold]{header}[/]: {status.replace('ran', 'running')} (log: {log_file})")
            _write_manifest(manifest_path, fingerprint, complete=False)
            result = stage.run()
            if hasattr(result, "__rich__"):  # a build step's summary table
                say(result)
        _write_manifest(manifest_path, fingerprint, complete=True)
        statuses[stage.name] = status
    return statuses


def _file_name(stage: Stage) -> str:
    return stage.name.replace("/", "--")


def _write_manifest(path: Path, fingerprint: str, complete: bool) -> None:
    write_text_atomically(path, json.dumps({"fingerprint": fingerprint, "complete": complete}) + "\n")
