"""What a training step keeps for backward, per layout and precision: the bytes autograd saves, split into
activations (which grow with the batch's tokens) and half-precision copies of the weights (which autocast makes
once per weight). It counts tensors, not a device's allocator, so it tells on a CPU where a GPU's memory goes.

    python benchmarks/activation_memory.py [--examples 2]

The model is shaped like GPU.md's 1.35B point (Llama, hidden 2048, vocabulary 128k, 16 heads), built with one
layer and with two: the difference is what each layer keeps, the rest is the embedding's and the output
head's. The quadruples have that point's lengths (prompts 20-80 tokens, responses 100-400); activations are
given per distinct token of the batch (a prompt counts once).
"""

from __future__ import annotations

import argparse
import contextlib
import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from wrpo.data import QuadrupleCollator
from wrpo.data.tokenize import EncodedQuadruple
from wrpo.training.logps import batch_logps
from wrpo.training.packing import attention_by_units

LAYOUTS = {  # name: (collator settings, output-head chunk size)
    "padding-free, chunked head (default)": (dict(share_prompt=True, padding_free=True), 1024),
    "shared prompt, chunked head": (dict(share_prompt=True, padding_free=False), 1024),
    "full rows, chunked head": (dict(share_prompt=False, padding_free=False), 1024),
}
# Not the naive full logits: they are [tokens, vocabulary] in float32 for backward (500 KiB per token here), and a
# CPU without bf16 units takes hours over them in bf16.


def quadruples(count: int, vocab: int, seed: int = 0) -> list[EncodedQuadruple]:
    rng = random.Random(seed)

    def ids(low: int, high: int) -> list[int]:
        return [rng.randrange(4, vocab) for _ in range(rng.randint(low, high))]

    return [EncodedQuadruple(prompt_ids=ids(20, 80), source_ids=[ids(100, 400)], target_ids=ids(100, 400),
                             rejected_ids=ids(100, 400), source_scores=None) for _ in range(count)]


def saved_bytes(model, batch: dict, chunk_size: int, autocast: bool, packed: bool) -> tuple[int, int]:
    """(activation bytes, weight-copy bytes) that autograd keeps for the backward of one forward."""
    # A linear layer saves its weight (a view of the parameter: no cost) or autocast's copy, sometimes transposed.
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    parameter_shapes = {shape for p in model.parameters() for shape in (tuple(p.shape), tuple(p.shape)[::-1])}
    saved: dict[tuple[int, torch.dtype], tuple[int, bool]] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr(), tensor.dtype] = (storage.nbytes(), tuple(tensor.shape) in parameter_shapes)
        return tensor

    with (attention_by_units(model) if packed else contextlib.nullcontext(),
          torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
        batch_logps(model, batch, chunk_size)
    activations = sum(size for size, is_weight in saved.values() if not is_weight)
    return activations, sum(size for size, is_weight in saved.values() if is_weight)


def llama(layers: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128_000, hidden_size=2048, intermediate_size=2048 * 11 // 4,
                                        num_hidden_layers=layers, num_attention_heads=16)).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2)
    args = parser.parse_args()
    models = [llama(1), llama(2)]
    examples = quadruples(args.examples, models[0].config.vocab_size)
    tokens = sum(len(e.prompt_ids) + len(e.source_ids[0]) + len(e.target_ids) + len(e.rejected_ids) for e in examples)
    print(f"{args.examples} quadruples, {tokens} distinct tokens\n")
    print("| layout | precision | activation checkpointing | KiB/token per layer | KiB/token outside layers "
          "| weight copies MiB per layer |")
    print("|---|---|---|---|---|---|")
    for name, (layout, chunk_size) in LAYOUTS.items():
        batch = QuadrupleCollator(0, **layout)(examples)
        for autocast in (True, False):
            for checkpointing in (False, True):
                if checkpointing and layout["share_prompt"] and not layout["padding_free"]:
                    continue  # the shared prompt needs the key/value cache that checkpointing turns off
                one, two = [], []
                for model, into in zip(models, (one, two), strict=True):
                    switch = model.activation_checkpointing_enable if checkpointing else \
                        model.activation_checkpointing_disable
                    switch()
                    into.extend(saved_bytes(model, batch, chunk_size, autocast, layout["padding_free"]))
                per_layer = (two[0] - one[0]) / tokens / 1024
                print(f"| {name} | {'bf16 autocast' if autocast else 'float32'} | {'on' if checkpointing else 'off'} "
                      f"| {per_layer:.0f} | {one[0] / tokens / 1024 - per_layer:.0f} | "
                      f"{(two[1] - one[1]) / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
