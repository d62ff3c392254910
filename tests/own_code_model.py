"""A tiny reward model that ships its own code, saved the way ArmoRM-Llama3-8B-v0.1 is (read in RLHFlow's
public modeling code; this is a tiny version of its shape, not a copy): a Python file beside the weights, named
by `auto_map` in config.json, a Llama body under a class of its own, and an output that carries `.score` beside
per-objective `rewards` and the gating network's weights (`gating_output`). With GATED_REWARD_IMPORTED set, its
module appends a line to that file whenever it is imported: the tests see whether its code ran."""

import importlib.util
import json
from pathlib import Path

import torch

from wrpo.demo.tiny import build_char_tokenizer, tiny_config

MODULE = "modeling_gated_reward"
CODE = r'''"""A reward model with a gating network over per-objective rewards (a tiny ArmoRM)."""
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput

if os.environ.get("GATED_REWARD_IMPORTED"):
    with open(os.environ["GATED_REWARD_IMPORTED"], "a") as marker:
        marker.write("imported\n")


@dataclass
class GatedRewardOutput(ModelOutput):
    score: torch.FloatTensor | None = None          # the reward: the objectives weighted by the gate
    rewards: torch.FloatTensor | None = None        # one per objective
    gating_output: torch.FloatTensor | None = None  # the gate's weights, from the prompt
    hidden_state: torch.FloatTensor | None = None   # the last token's


class GatedRewardModel(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
        self.gating = nn.Linear(config.hidden_size, config.num_objectives)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = (attention_mask.sum(dim=1) - 1) if attention_mask is not None else \
            torch.full((hidden.shape[0],), hidden.shape[1] - 1, device=hidden.device)
        final = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        rewards = self.regression_layer(final)
        gate = torch.softmax(self.gating(hidden[:, 0]), dim=-1)
        return GatedRewardOutput(score=(gate * rewards).sum(dim=-1), rewards=rewards, gating_output=gate,
                                 hidden_state=final)
'''


def save_gated_reward_model(folder: Path, objectives: int = 3, seed: int = 0) -> Path:
    """The model's code, weights, config (with auto_map) and a character tokenizer with a chat template."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(CODE)
    module_spec = importlib.util.spec_from_file_location(MODULE, folder / f"{MODULE}.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    tokenizer = build_char_tokenizer()
    config = tiny_config("llama", tokenizer)
    config.num_objectives = objectives
    torch.manual_seed(seed)
    module.GatedRewardModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved.update({"architectures": ["GatedRewardModel"],
                  "auto_map": {"AutoModelForSequenceClassification": f"{MODULE}.GatedRewardModel"}})
    (folder / "config.json").write_text(json.dumps(saved, indent=2))
    return folder
