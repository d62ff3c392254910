"""Choosing a training run's checkpoint by held-out reward, as FuseChat-3.0 took the better of its last two:
the last K complete checkpoints answer the held-out prompts greedily, the recipe's judge scores them (the
ablation's evaluation: answers and scores cached by content), and the best mean reward is copied out as a
model folder with choice.json, the figures it was chosen by."""

from __future__ import annotations

import json
import os
import shutil
from itertools import islice
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from wrpo.errors import InputError
from wrpo.evaluation.compare import evaluate_model
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY, BackendSettings
from wrpo.reward.settings import RewardSettings

CHOICE_FILE = "choice.json"
# What a checkpoint holds for Trainer alone (optimizer, scheduler, random states, DeepSpeed's shards): left out of
# the chosen model's folder.
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "rng_state*.pth",
                 "global_step*", "latest", "zero_to_fp32.py")


class CheckpointChoiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trained: Path                 # the training run's output folder, with its checkpoint-N folders
    last: int                     # choose among the last this many
    eval_prompts: Path
    reward: RewardSettings        # the judge
    backend: BackendSettings      # the engine the checkpoints answer on
    max_new_tokens: int
    batch_size: int
    output: Path                  # the chosen model's folder


def choose_checkpoint(spec: CheckpointChoiceSpec) -> dict:
    """Judges the last `spec.last` checkpoints, writes the best to spec.output and returns what choice.json holds."""
    from wrpo.training.checkpoints import complete_checkpoints  # transformers' Trainer: not for a reader of results

    candidates = list(islice(complete_checkpoints(spec.trained), spec.last))[::-1]  # oldest first
    if not candidates:
        raise InputError("no complete checkpoint to choose from (checkpoints are saved every save_steps)", spec.trained)
    for checkpoint in candidates:
        if not any(checkpoint.glob("*.safetensors")) and not any(checkpoint.glob("pytorch_model*.bin")):
            raise InputError("holds no whole model (FSDP's sharded state dict?): checkpoint_choice needs "
                             "checkpoints from_pretrained can load", checkpoint)
    settings = GREEDY.model_copy(update={"max_new_tokens": spec.max_new_tokens})
    judged = []
    for checkpoint in candidates:
        result = evaluate_model(checkpoint.name, str(checkpoint), spec.eval_prompts, spec.reward.scorer,
                                spec.output.parent / ".checkpoint-choice" / spec.output.name, settings,
                                batch_size=spec.batch_size, trust_remote_code=spec.reward.trust_remote_code,
                                backend=spec.backend)
        judged.append({"checkpoint": checkpoint.name, "step": int(checkpoint.name.rpartition("-")[2]),
                       **result.as_dict()})
    best = max(judged, key=lambda each: (each["mean_reward"], each["step"]))  # a tie goes to the later
    choice = {"chosen": best["checkpoint"], "judge": spec.reward.scorer, "eval_prompts": str(spec.eval_prompts),
              "candidates": judged}
    _write_model(spec.trained / best["checkpoint"], spec.output, choice)
    return choice


def _write_model(checkpoint: Path, output: Path, choice: dict) -> None:
    """The checkpoint's model and tokenizer files (hard links where the file system allows: an 8B model is 16 GB)
    and choice.json, built in OUTPUT.partial (which a redone stage removes) and then put in place."""
    building = output.with_name(output.name + ".partial")
    if building.exists():  # left by a run that was killed
        shutil.rmtree(building)
    shutil.copytree(checkpoint, building, ignore=shutil.ignore_patterns(*TRAINER_FILES), copy_function=_link_or_copy)
    write_text_atomically(building / CHOICE_FILE, json.dumps(choice, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    building.rename(output)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def read_choice(output: Path) -> dict | None:
    path = output / CHOICE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def describe_choice(choice: dict) -> str:
    """One line: the chosen checkpoint and every candidate's mean held-out reward."""
    figures = ", ".join(f"{each['checkpoint']} {each['mean_reward']:.4g}" for each in choice["candidates"])
    return f"chose {choice['chosen']} by mean held-out reward ({figures})"
