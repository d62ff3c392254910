"""Responses are written without the white space a chat template makes a model put before them."""

import json

import torch
from transformers import AutoModelForCausalLM

from conftest import write_jsonl
from wrpo.demo.tiny import build_char_tokenizer, save_tiny_model
from wrpo.generation.sample import sample
from wrpo.generation.settings import GREEDY

# Like Llama 2's `[/INST]` or a plain `Assistant:`: the generation prompt ends without a space.
TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def save_bigram_model(folder, next_token: dict[str, str]):
    """A real Llama checkpoint whose next token depends only on the current one, as `next_token` says:
    its layers write nothing to the residual stream, each token embeds as its own axis and the output
    head maps that axis to the token that follows."""
    tokenizer = build_char_tokenizer(chat_template=False)
    tokenizer.chat_template = TEMPLATE
    hidden = 8 * (len(tokenizer) // 8 + 1)  # room for one axis per token, and whole attention heads
    save_tiny_model(folder, tokenizer, "llama", hidden_size=hidden, num_layers=1)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(len(tokenizer), hidden))
        model.lm_head.weight.zero_()
        for current, following in next_token.items():
            row, column = tokenizer.convert_tokens_to_ids(following), tokenizer.convert_tokens_to_ids(current)
            model.lm_head.weight[row, column] = 50
    model.save_pretrained(folder)
    return folder


def test_a_space_the_template_makes_the_model_put_first_is_not_written(tmp_path):
    model = save_bigram_model(tmp_path / "model", {":": " ", " ": "o", "o": "k", "k": "</s>"})
    prompts = write_jsonl(tmp_path / "p.jsonl",
                          [{"prompt_id": "a", "prompt": "hi"}, {"prompt_id": "b", "prompt": "yo"}])
    output = sample(str(model), prompts, tmp_path / "s.jsonl", GREEDY)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["responses"] for row in rows] == [["ok"], ["ok"]]  # the model says " ok"
