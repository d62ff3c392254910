"""Without a chat template, training, SFT and scoring see one plain-text prompt."""

import torch
from transformers import LlamaForSequenceClassification

from conftest import write_jsonl
from wrpo.data.tokenize import encode_prompt, plain_prompt
from wrpo.demo.tiny import tiny_config
from wrpo.modeling import load_tokenizer
from wrpo.reward.scorers import RewardModelScorer
from wrpo.training.sft import load_sft_dataset

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "reverse abc"}]


def test_training_sft_and_a_reward_model_see_the_same_plain_prompt(tiny_model_without_template, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_without_template))
    assert tokenizer.chat_template is None
    text = plain_prompt(MESSAGES)
    assert text == "be brief\nreverse abc"
    assert encode_prompt(tokenizer, MESSAGES)[1] == text
    rows = write_jsonl(tmp_path / "s.jsonl", [{"prompt": MESSAGES, "response": "cba"}])
    assert load_sft_dataset(rows, tokenizer)[0]["prompt"] == text

    config = tiny_config("llama", tokenizer)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "reward")
    tokenizer.save_pretrained(tmp_path / "reward")
    rendered = RewardModelScorer(str(tmp_path / "reward"))._render(MESSAGES, "cba")
    assert rendered == f"{tokenizer.bos_token}{text}\ncba{tokenizer.eos_token}"
