"""Generation backends: each turns a batch of prompts into n sampled responses per prompt.

hf:   transformers `generate` with a KV cache, prompts left-padded in batches of similar length.
vllm: vLLM offline inference (optional extra, imported only when chosen), tensor/data parallel.
Both feed the model the token ids of `encode_prompt`, the same ones training uses.
openai: any OpenAI-compatible server (vllm serve, SGLang, TGI, transformers serve, a hosted API):
the server applies the model's chat template; only text crosses, which is all implicit fusion needs.
"""

from __future__ import annotations

import hashlib
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from wrpo.data.records import Prompt
from wrpo.data.tokenize import as_messages, encode_prompt
from wrpo.errors import InputError
from wrpo.generation.engine_reaper import start_watchdog, stop_watchdog
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.modeling import load_causal_lm, load_tokenizer


def prompt_seed(seed: int, key: str) -> int:
    """A seed from the run's seed and a prompt id (vllm: per prompt) or a batch's ids (hf)."""
    return int(hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()[:8], 16)


class HFGenerator:
    def __init__(self, model_dir: str, device: str | None = None):
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.padding_side = "left"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.model = load_causal_lm(model_dir, dtype=dtype).to(self.device).eval()
        # Chat models often end a turn with a token other than the tokenizer's EOS (Gemma 2: both
        # <eos> and <end_of_turn>); stop at any of them.
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [] if configured is None else [configured]
        eos = self.tokenizer.eos_token_id
        self.stop_ids = sorted({*configured, *([eos] if eos is not None else [])}) or None

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)[0]

    def generate(self, prompt_ids: list[list[int]], prompt_keys: list[str],
                 settings: SamplingSettings) -> list[list[str]]:
        width = max(len(ids) for ids in prompt_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids],
                                      device=self.device)
        # transformers draws from one generator per call, so samples depend on the batch: seed it from
        # the batch's prompts, and a resumed run (same batches) regenerates a batch exactly.
        torch.manual_seed(prompt_seed(settings.seed, "|".join(prompt_keys)))
        sampling = settings.temperature > 0
        copies = settings.n if sampling else 1  # greedy answers are all the same: decode once
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=settings.max_new_tokens,
                do_sample=sampling, temperature=settings.temperature if sampling else None,
                top_p=settings.top_p if sampling else None, top_k=0 if sampling else None,
                repetition_penalty=settings.repetition_penalty,
                num_return_sequences=copies, pad_token_id=self.stop_ids[0] if self.stop_ids else pad,
                eos_token_id=self.stop_ids)
        texts = [self.tokenizer.decode(self._until_stop(ids), skip_special_tokens=True)
                 for ids in output[:, width:].tolist()]
        return [texts[i * copies:(i + 1) * copies] * (settings.n // copies) for i in range(len(prompt_ids))]

    def _until_stop(self, ids: list[int]) -> list[int]:
        """An answer's tokens before its first stop token. generate fills the rest of a finished answer
        with the stop token, not the pad token: in a batch without padding transformers drops the
        attention mask, and a pad id fed back after the end then makes it warn that the input may be
        padded without a mask."""
        stops = set(self.stop_ids or ())
        return next((ids[:index] for index, token in enumerate(ids) if token in stops), ids)


class VLLMGenerator:
    """vLLM's offline engine in this process (its workers are processes of their own, so a script that
    builds one needs an `if __name__ == "__main__":` guard; the wrpo command has one). Those processes end
    when this one dies, even by SIGKILL (engine_reaper)."""

    def __init__(self, model_dir: str, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 engine_kwargs: dict | None = None):
        if data_parallel_size > 1:
            # vllm.LLM refuses it (one process cannot drive several replicas); checked before the import
            # and the engine start, which take a minute.
            raise InputError(f"data_parallel_size {data_parallel_size} (--data-parallel-size): vLLM's offline "
                             "engine runs one replica per process; run one `wrpo sample --shard I/N` per replica "
                             "(each with its own CUDA_VISIBLE_DEVICES) and join them with `wrpo merge`")
        try:
            from vllm import LLM
        except ImportError:
            raise InputError("the vllm backend needs vLLM, which is not installed: pip install 'wrpo[vllm]'") from None
        engine_kwargs = dict(engine_kwargs or {})
        # The prompt ids are ours (encode_prompt), so our tokenizer must be the one vLLM would load.
        self.tokenizer = load_tokenizer(engine_kwargs.get("tokenizer", model_dir),
                                        trust_remote_code=bool(engine_kwargs.get("trust_remote_code", False)))
        watchdog = start_watchdog()
        try:
            self.llm = LLM(model=model_dir, tensor_parallel_size=tensor_parallel_size, **engine_kwargs)
        except BaseException:
            stop_watchdog(watchdog)
            raise
        # The watchdog lives as long as the engine: vLLM shuts its processes down when the LLM is collected
        # (several sampling stages in one `wrpo run` each build and drop one).
        weakref.finalize(self.llm, stop_watchdog, watchdog)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)[0]

    def generate(self, prompt_ids: list[list[int]], prompt_keys: list[str],
                 settings: SamplingSettings) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # vLLM refuses n > 1 when greedy; greedy answers are all the same anyway: decode once, copy.
        copies = settings.n if settings.temperature > 0 else 1
        # Seeded per prompt (vLLM gives each request its own generator): a prompt's samples do not
        # depend on the batch it is in.
        params = [SamplingParams(n=copies, temperature=settings.temperature, top_p=settings.top_p,
                                 repetition_penalty=settings.repetition_penalty, max_tokens=settings.max_new_tokens,
                                 seed=prompt_seed(settings.seed, key))
                  for key in prompt_keys]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, use_tqdm=False)
        return [[completion.text for completion in output.outputs] * (settings.n // copies) for output in outputs]


def openai_client(base_url: str, api_key_env: str | None = None):
    """A client of an OpenAI-compatible server, its key from the environment variable `api_key_env`
    (OPENAI_API_KEY where none is named; a local server takes any). It retries nothing itself:
    with_retries does, the same way for every caller."""
    try:
        from openai import OpenAI
    except ImportError:
        raise InputError("an OpenAI-compatible server needs the openai package: pip install 'wrpo[openai]'") from None
    key = os.environ.get(api_key_env or "OPENAI_API_KEY")
    if api_key_env and not key:
        raise InputError(f"the environment variable {api_key_env} is not set (it should hold the server's API key)")
    return OpenAI(base_url=base_url, api_key=key or "not-needed", max_retries=0)


# openai's errors worth another try: 429, 5xx, timeouts and refused connections (a server restarting).
RETRIED = ("RateLimitError", "InternalServerError", "APIConnectionError", "APITimeoutError")


def with_retries(request, max_retries: int = 10, max_delay: float = 30.0):
    """request(), tried again with exponential backoff (1 s, 2 s, ... up to max_delay) while it fails
    with one of RETRIED; any other error, or the last failure, is an InputError naming it."""
    delay = 1.0
    for attempt in range(max_retries + 1):
        try:
            return request()
        except Exception as error:  # noqa: BLE001 -- openai's error classes, matched by name below
            if type(error).__name__ not in RETRIED:
                raise InputError(f"the server refused the request ({type(error).__name__}: {error})") from None
            if attempt == max_retries:
                raise InputError(f"the server kept failing after {max_retries} retries "
                                 f"({type(error).__name__}: {error})") from None
            time.sleep(delay)
            delay = min(2 * delay, max_delay)


class OpenAIGenerator:
    """Chat completions from a server, `concurrency` requests at a time, retried (with_retries), and
    asked again for the missing samples when a server returns fewer than n (some ignore `n`)."""

    def __init__(self, model: str, base_url: str, api_key_env: str | None = None, concurrency: int = 8):
        self.client = openai_client(base_url, api_key_env)
        self.model, self.concurrency = model, concurrency

    def prompt_ids(self, prompt: Prompt) -> list[dict[str, str]]:
        return as_messages(prompt)  # the server renders the chat template itself

    def generate(self, prompts: list[list[dict[str, str]]], prompt_keys: list[str],
                 settings: SamplingSettings) -> list[list[str]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda pair: self._samples(*pair, settings), zip(prompts, prompt_keys, strict=True)))

    def _samples(self, messages: list[dict[str, str]], key: str, settings: SamplingSettings) -> list[str]:
        # Greedy answers are all the same (and vllm serve refuses n > 1 when greedy): ask once, copy.
        wanted = settings.n if settings.temperature > 0 else 1
        # Not a parameter of OpenAI's API: vLLM's and SGLang's servers take it as an extra field of the request;
        # sent only when asked for, so that a hosted API is not sent a field it may refuse.
        penalty = ({"extra_body": {"repetition_penalty": settings.repetition_penalty}}
                   if settings.repetition_penalty != 1.0 else {})
        texts: list[str] = []
        while len(texts) < wanted:
            response = with_retries(lambda have=len(texts): self.client.chat.completions.create(
                model=self.model, messages=messages, n=wanted - have, temperature=settings.temperature,
                top_p=settings.top_p, max_tokens=settings.max_new_tokens, seed=prompt_seed(settings.seed, key) + have,
                **penalty))
            texts += [choice.message.content or "" for choice in response.choices]
        return texts[:wanted] * (settings.n // wanted)


def make_generator(backend: BackendSettings, model: str, device: str | None = None):
    """The generator of `backend` for `model` (a folder or Hub id; openai: the server's model name)."""
    if backend.backend == "vllm":
        return VLLMGenerator(model, **backend.options)
    if backend.backend == "openai":
        return OpenAIGenerator(model, **backend.options)
    return HFGenerator(model, device=device)
