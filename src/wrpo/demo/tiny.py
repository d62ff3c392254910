"""Tiny tokenizers and models built locally (no hub), saved and loaded like real checkpoints."""

from __future__ import annotations

import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + " .,:;!?-'"


def build_char_tokenizer(alphabet: str = DEFAULT_ALPHABET, chat_template: bool = True):
    """A character-level tokenizer with chat-role tokens (and, by default, a chat template)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(set(alphabet)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.add_special_tokens(SPECIAL_TOKENS)
    # Without Fuse, a character-level WordLevel tokenizer decodes with spaces between characters.
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(tokenizer, hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_llama(folder: str | Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0,
                    chat_template: bool = True) -> Path:
    """Builds and saves a tiny Llama with a character tokenizer to `folder`; returns the folder."""
    folder = Path(folder)
    tokenizer = build_char_tokenizer(chat_template=chat_template)
    build_tiny_llama(tokenizer, hidden_size, num_layers, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
