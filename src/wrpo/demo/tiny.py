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


def build_bpe_tokenizer(corpus: list[str], vocab_size: int = 300, chat_template: bool = True):
    """A byte-level BPE tokenizer trained on `corpus` (stable across processes, unlike Unigram and
    WordPiece training), with chat-role tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(architecture: str, tokenizer, hidden_size: int = 32, num_layers: int = 2):
    """A transformers config of `architecture` (llama, qwen2, gpt2 or gpt_neox) sized for a CPU."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    tokens = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if architecture == "gpt2":
        return GPT2Config(n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=512, **tokens)
    shape = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                 num_attention_heads=4, max_position_embeddings=512, **tokens)
    if architecture == "gpt_neox":
        return GPTNeoXConfig(**shape)
    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if architecture not in configs:
        raise ValueError(f"architecture must be llama, qwen2, gpt2 or gpt_neox, got {architecture!r}")
    return configs[architecture](num_key_value_heads=2, **shape)


def save_tiny_model(folder: str | Path, tokenizer, architecture: str = "llama", hidden_size: int = 32,
                    num_layers: int = 2, seed: int = 0) -> Path:
    """Builds a randomly initialised tiny model and saves it with its tokenizer, like a real checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(architecture, tokenizer, hidden_size, num_layers))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: str | Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0,
                    chat_template: bool = True) -> Path:
    """A tiny Llama with a character tokenizer, saved to `folder`."""
    return save_tiny_model(folder, build_char_tokenizer(chat_template=chat_template), "llama", hidden_size,
                           num_layers, seed)
