"""Where every stage of `wrpo run` reads and writes below the recipe's workdir, named once: the stages,
the executors, `wrpo status` and the demo all take their paths from a Workdir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workdir:
    root: Path

    # Data: samples and scores per model, then what the build stages make of them.
    def source_samples(self, source: str) -> Path:
        return self.root / "samples" / "sources" / f"{source}.jsonl"

    def source_scores(self, source: str) -> Path:
        return self.root / "scores" / "sources" / f"{source}.jsonl"

    @property
    def target_samples(self) -> Path:
        return self.root / "samples" / "target-sft.jsonl"

    @property
    def target_scores(self) -> Path:
        return self.root / "scores" / "target-sft.jsonl"

    @property
    def sft_data(self) -> Path:
        return self.root / "data" / "sft.jsonl"

    @property
    def preference_prompts(self) -> Path:
        return self.root / "data" / "preference_prompts.jsonl"

    @property
    def quadruples(self) -> Path:
        return self.root / "data" / "quadruples.jsonl"

    # Models.
    @property
    def target_sft(self) -> Path:
        return self.root / "models" / "target-sft"

    @property
    def target_wrpo(self) -> Path:
        return self.root / "models" / "target-sft-wrpo"

    def trained(self, section: str) -> Path:
        """The model a training section of the recipe (sft, wrpo) makes."""
        return {"sft": self.target_sft, "wrpo": self.target_wrpo}[section]

    def chosen(self, section: str) -> Path:
        """The checkpoint of a training section's run chosen by held-out reward (a recipe's checkpoint_choice)."""
        trained = self.trained(section)
        return trained.with_name(f"{trained.name}-chosen")

    # `wrpo ablate`: its data, one model per variant and seed, the evaluation and the report.
    @property
    def ablation(self) -> Path:
        return self.root / "ablation"

    def ablation_data(self, name: str) -> Path:
        return self.ablation / "data" / f"{name}.jsonl"

    def ablation_model(self, variant: str, seed: int) -> Path:
        return self.ablation / "models" / f"seed{seed}" / variant

    # Bookkeeping: per stage a log, a manifest (the fingerprint it ran with), the stage file its processes
    # read, and the parts of a sharded output before they are merged.
    def log(self, stage: str) -> Path:
        return self.root / "logs" / f"{file_name(stage)}.log"

    def task_log(self, stage: str, index: int) -> Path:
        """The log of one of a stage's processes run at once (a shard)."""
        return self.root / "logs" / f"{file_name(stage)}.{index}.log"

    def manifest(self, stage: str) -> Path:
        return self.root / ".wrpo" / "stages" / f"{file_name(stage)}.json"

    def stage_file(self, stage: str) -> Path:
        """The planned stage, as wrpo.pipeline.worker reads it."""
        return self.root / ".wrpo" / "stages" / f"{file_name(stage)}.stage.json"

    def accelerate_config(self, stage: str) -> Path:
        """The accelerate config written for a stage when the recipe names none."""
        return self.root / ".wrpo" / "stages" / f"{file_name(stage)}.accelerate.yaml"

    def shard(self, output: Path, index: int, count: int) -> Path:
        return output.parent / ".shards" / f"{output.stem}.{index}-of-{count}{output.suffix}"

    @property
    def slurm(self) -> Path:
        """Job scripts and the record of what was submitted."""
        return self.root / ".wrpo" / "slurm"

    @property
    def job_records(self) -> Path:
        """What each Slurm job recorded of its runs (wrpo.pipeline.slurm_job), and its stop requests."""
        return self.slurm / "jobs"


def file_name(stage: str) -> str:
    return stage.replace("/", "--")
