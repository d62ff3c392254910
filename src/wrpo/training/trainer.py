"""WRPOTrainer: a transformers.Trainer whose loss is a WRPO objective from wrpo.losses.

Checkpointing, resume, logging integrations, accelerate, DeepSpeed and peft come from Trainer;
this class adds the policy/reference log-probs, the alpha schedule and the WRPO metrics. The
speed-ups (precomputed reference log-probs, shared prompt, chunked output head, length-grouped
batches) are switches of WRPOConfig; each gives the naive computation's result.

It is called as TRL's DPOTrainer is: a model (or its path), a config, a `datasets.Dataset` of rows in
either quadruple format (or a list of dicts), and the tokenizer as processing_class. Rows are read,
validated and encoded as `wrpo train` reads its data file (wrpo.data.dataset.load_quadruple_dataset).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections import defaultdict
from collections.abc import Callable

import accelerate.utils.other
import torch
from transformers import Trainer
from transformers.integrations import is_deepspeed_zero3_enabled, is_fsdp_enabled
from transformers.integrations.liger import apply_liger_kernel
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.utils import logging

from wrpo.data.dataset import QuadrupleCollator, QuadrupleDataset, load_quadruple_dataset
from wrpo.data.tokenize import QuadrupleEncoder
from wrpo.losses import LOSSES, REFERENCE_FREE, LossOutput, LossSettings, PreferenceLogps, ResponseLogps
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.progress import console, is_main_process
from wrpo.training.callbacks import MetricsFileCallback
from wrpo.training.checkpoints import LoadsCheckpointWeightsWithFromPretrained
from wrpo.training.config import WRPOConfig
from wrpo.training.logps import batch_logps, head_reproduces_logits, packing_reproduces_logps, split_responses
from wrpo.training.packing import attention_by_units
from wrpo.training.policy import is_peft_model, load_policy, with_lora
from wrpo.training.reference import with_reference_logps
from wrpo.training.schedules import alpha_at

logger = logging.get_logger(__name__)

# accelerate's unwrap_model, which Trainer calls when it starts and saves, imports DeepSpeed whenever it is
# installed, to ask whether the model is a DeepSpeedEngine: a second of imports, memory and a banner in
# every run. A model can only be a DeepSpeedEngine once DeepSpeed has been imported (a DeepSpeed run does).
accelerate.utils.other.is_deepspeed_available = lambda: "deepspeed" in sys.modules


@contextlib.contextmanager
def whole_weights(model):
    """Under DeepSpeed ZeRO-3 a model loaded by from_pretrained holds only this process's slice of
    each weight until DeepSpeed's engine wraps it at the start of training, so the forward passes the
    trainer makes before then (the reference log-probs) run with every weight gathered on every
    process: one pass at the model's full size, before any optimizer state exists."""
    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def disable_dropout(model) -> None:
    """TRL's disable_dropout_in_model, here because importing trl for it would load trl (and all it
    imports) into every WRPO run."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def encoded_quadruples(data, name: str, tokenizer, args: WRPOConfig) -> QuadrupleDataset:
    """`data` as encoded quadruples: a QuadrupleDataset as it is; rows (a `datasets.Dataset`, a list of
    dicts, a file) read, validated and encoded as `wrpo train` does its data file, errors naming the
    row as `train_dataset[3]`."""
    if isinstance(data, QuadrupleDataset):
        return data
    encoder = QuadrupleEncoder(tokenizer, args.max_length, args.max_prompt_length, args.top_k_sources)
    encoded = load_quadruple_dataset(data, encoder, args.source_weighting, name)
    if is_main_process():
        console.print(f"{name}: {encoder.report.describe()}")
    return encoded


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler with each epoch's order drawn from its own generator, seeded with the
    run's seed plus the epoch. By default it draws from the global generator, and a run resumed in the middle of an
    epoch then drew another order than the interrupted run had: Trainer puts the checkpoint's random state back
    only after the order is drawn. The epoch comes from a function (the trainer's state) rather than set_epoch,
    which accelerate does not pass down to a sampler under DDP once Trainer skips the batches done. Its own
    generator also keeps evaluation from moving the training run's random state."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int, epoch: Callable[[], int]):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed, self.epoch = seed, epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch())
        return super().__iter__()


class WRPOTrainer(LoadsCheckpointWeightsWithFromPretrained, Trainer):
    """WRPO on a transformers Trainer, called as TRL's DPOTrainer:

        WRPOTrainer(model=model_or_path, args=WRPOConfig(...), train_dataset=dataset, processing_class=tokenizer)

    model: a causal LM, or its path (loaded in args.model_dtype, 4-bit with load_in_4bit); given LoRA adapters
    when args.lora_r > 0 and it has none yet. train_dataset / eval_dataset: a `datasets.Dataset` (or a
    list of dicts) of native or release-format rows, or a QuadrupleDataset already encoded; eval_dataset
    may also be a dict of them, named in the metrics as Trainer does. processing_class: the tokenizer,
    loaded from the model's path when not given. ref_model (a model or its path): the reference; by
    default the starting policy (or, for LoRA, the policy with its adapters disabled). args: by default
    WRPOConfig(output_dir="<model name>-WRPO").
    """

    def __init__(self, model, args: WRPOConfig | None = None, train_dataset=None, processing_class=None,
                 ref_model=None, eval_dataset=None, callbacks=None, data_collator=None):
        model_path = model if isinstance(model, str) else getattr(model, "name_or_path", None)
        if args is None:
            args = WRPOConfig(output_dir=f"{str(model_path or 'model').rstrip('/').split('/')[-1]}-WRPO")
        if isinstance(model, str):
            model = load_policy(model, args)
        elif args.lora_r > 0 and not is_peft_model(model):
            model = with_lora(model, args)
        if isinstance(ref_model, str):
            ref_model = load_causal_lm(ref_model, dtype=args.weights_dtype)
        if processing_class is None:
            if not model_path:
                raise ValueError("processing_class is None and the model has no name_or_path to load a tokenizer "
                                 "from: pass processing_class=tokenizer")
            processing_class = load_tokenizer(model_path)
        if train_dataset is None:
            raise ValueError("train_dataset is needed: a datasets.Dataset (or a list of dicts) of quadruple rows")
        train_dataset = encoded_quadruples(train_dataset, "train_dataset", processing_class, args)
        if isinstance(eval_dataset, dict):
            eval_dataset = {key: encoded_quadruples(value, f"eval_dataset[{key!r}]", processing_class, args)
                            for key, value in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = encoded_quadruples(eval_dataset, "eval_dataset", processing_class, args)
        pad_id = processing_class.pad_token_id
        if pad_id is None:
            pad_id = processing_class.eos_token_id or 0
        collator = data_collator or QuadrupleCollator(pad_id, args.source_weighting, args.share_prompt,
                                                      args.padding_free)
        needs_reference = args.loss not in REFERENCE_FREE
        # A LoRA policy is its own reference with the adapters disabled: no copy needed.
        self.reference_is_disabled_adapters = (needs_reference and ref_model is None
                                               and hasattr(model, "disable_adapter"))
        if needs_reference and not args.precompute_ref_logps and not self.reference_is_disabled_adapters:
            if is_deepspeed_zero3_enabled():
                # A reference model run every step would need a DeepSpeed engine of its own.
                raise ValueError("under DeepSpeed ZeRO-3 the reference is a precomputed pass (precompute_ref_logps, "
                                 "the default) or, for a LoRA policy, the base with adapters disabled")
            if ref_model is None:
                # The reference is the starting policy, frozen: copy it before training moves it.
                ref_model = copy.deepcopy(model)
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, data_collator=collator,
            callbacks=[MetricsFileCallback(args.output_dir), *(callbacks or [])],
        )
        # compute_loss returns a per-batch mean; Trainer divides it for gradient accumulation.
        self.loss_is_scaled_for_ga = False
        if needs_reference and is_fsdp_enabled():
            raise ValueError("FSDP's cpu_ram_efficient_loading leaves the weights on the first process only until "
                             "training starts, so the reference cannot be taken from them: set "
                             "fsdp_cpu_ram_efficient_loading to false (recipes/accelerate/fsdp.yaml does)")
        if self.is_fsdp_enabled:
            # Trainer leaves an FSDP model where it was loaded (the CPU) for FSDP to shard when training
            # starts; the passes below run before that, on this process's device.
            self.model.to(self.args.device)
        if args.use_liger_kernel:
            # Before the passes below (the reference's among them), so that they compute as training will;
            # Trainer applies them again when training starts, which changes nothing.
            apply_liger_kernel(self.model, args.liger_kernel_config)
        if args.disable_dropout:
            # Dropout makes the policy differ from the reference (in eval mode) even at step 0.
            disable_dropout(self.model)
        if train_dataset:
            self._turn_off_speedups_the_model_cannot_take(train_dataset[0], pad_id)
        self.ref_model = None
        if needs_reference and args.precompute_ref_logps:
            # Before any checkpoint is loaded, the policy is the starting model: it serves as the
            # reference itself unless another was given, and no copy is made.
            reference = ref_model.to(self.args.device) if ref_model is not None else self.model
            with whole_weights(reference):
                self._attach_reference_logps(reference)
        elif needs_reference and ref_model is not None:
            ref_model.eval().requires_grad_(False)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_prefix = "eval"

    def _turn_off_speedups_the_model_cannot_take(self, example, pad_id: int) -> None:
        with whole_weights(self.model):
            ids = torch.tensor([example.prompt_ids + example.target_ids], device=self.args.device)
            if self.args.logps_chunk_size > 0 and not head_reproduces_logits(self.model, ids):
                logger.warning("the chunked output head does not reproduce this model's logits: "
                               "logps_chunk_size set to 0")
                self.args.logps_chunk_size = 0
            if self.args.padding_free and not packing_reproduces_logps(self.model, [example], pad_id, self.args.device):
                logger.warning("this model's attention does not take the padding-free layout (a sliding window, or "
                               "attention outside transformers' AttentionInterface): padding_free set to false")
                self.args.padding_free = self.data_collator.padding_free = False

    def _attach_reference_logps(self, reference) -> None:
        def attach(dataset):
            return with_reference_logps(dataset, reference, self.data_collator, self.args.reference_batch_size,
                                        self.args.device, self.args.logps_chunk_size,
                                        self.args.reference_cache_dir, autocast=self.accelerator.autocast,
                                        precision=f"bf16={self.args.bf16} fp16={self.args.fp16}")

        self.train_dataset = attach(self.train_dataset)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {key: attach(dataset) for key, dataset in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = attach(self.eval_dataset)

    def _length_grouped_sampler(self, dataset, batch_size: int, epoch: Callable[[], int] = lambda: 0):
        # Trainer can only read lengths from a `datasets` column; ours are prompt + longest response.
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(batch_size, [example.length for example in dataset.examples], seed,
                                               epoch)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length":
            # The epoch whose order is drawn: a resumed run's state is the checkpoint's (epoch 2.4: epoch 2).
            per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return self._length_grouped_sampler(dataset, per_step, lambda: int(self.state.epoch or 0))
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if self.args.train_sampling_strategy == "group_by_length":
            return self._length_grouped_sampler(eval_dataset, self.args.eval_batch_size)
        return super()._get_eval_sampler(eval_dataset)

    def current_alpha(self) -> float:
        """alpha of the optimizer step being taken: a pure function of the global step."""
        return alpha_at(self.state.global_step, self.state.max_steps, self.args.alpha, self.args.alpha_schedule)

    def _response_logps(self, model, inputs) -> tuple[ResponseLogps, ResponseLogps]:
        # accelerate runs only the model's forward under autocast (and hands its outputs back in float32);
        # the chunked output head after it must run in the same precision.
        with self.accelerator.autocast():
            logps, counts = batch_logps(model, inputs, self.args.logps_chunk_size)
        num_sources = inputs["source_weights"].shape[1]
        return split_responses(logps, num_sources), split_responses(counts, num_sources)

    def _reference_logps(self, inputs) -> ResponseLogps | None:
        num_sources = inputs["source_weights"].shape[1]
        if "reference_logps" in inputs:
            return split_responses(inputs["reference_logps"].reshape(-1), num_sources)
        if self.ref_model is None and self.reference_is_disabled_adapters:
            with self.accelerator.unwrap_model(self.model).disable_adapter(), torch.no_grad():
                return self._response_logps(self.model, inputs)[0]
        if self.ref_model is None:
            if self.args.loss in REFERENCE_FREE:
                return None
            raise ValueError("this batch has no reference log-probs: with precompute_ref_logps they are computed "
                             "for the datasets given to WRPOTrainer, so pass eval_dataset there (or turn "
                             "precompute_ref_logps off)")
        with torch.no_grad():
            return self._response_logps(self.ref_model, inputs)[0]

    def _loss_output(self, model, inputs) -> tuple[LossOutput, ResponseLogps, float]:
        policy, lengths = self._response_logps(model, inputs)
        alpha = self.current_alpha()
        settings = LossSettings(alpha=alpha, beta=self.args.beta, gamma=self.args.gamma,
                                label_smoothing=self.args.label_smoothing)
        batch = PreferenceLogps(policy=policy, reference=self._reference_logps(inputs), lengths=lengths,
                                source_weights=inputs["source_weights"])
        return LOSSES[self.args.loss](batch, settings), policy, alpha

    def training_step(self, model, inputs, num_items_in_batch=None):
        # The backward runs inside too: activation checkpointing's recompute must attend by units as well.
        with attention_by_units(model) if self.args.padding_free else contextlib.nullcontext():
            return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        output, policy, alpha = self._loss_output(model, inputs)
        self._store_metrics("train" if model.training else "eval", output, policy, alpha, inputs["source_weights"])
        loss = output.losses.mean()
        return (loss, output) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _store_metrics(self, mode: str, output: LossOutput, policy: ResponseLogps, alpha: float,
                       source_weights: torch.Tensor) -> None:
        """Per-batch means gathered over processes, so logged values are global, not per process."""
        source_logps = (policy.source * source_weights).sum(dim=-1)
        per_example = {
            "rewards/source_chosen": output.source_rewards,
            "rewards/target_chosen": output.target_rewards,
            "rewards/chosen": output.chosen_rewards,
            "rewards/rejected": output.rejected_rewards,
            "rewards/margins": output.margins,
            "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
            "logps/source_chosen": source_logps,
            "logps/target_chosen": policy.target,
            "logps/rejected": policy.rejected,
        }
        metrics = self._metrics[mode]
        for name, values in per_example.items():
            metrics[name].append(self.accelerator.gather_for_metrics(values.detach()).float().mean().item())
        metrics["alpha"].append(alpha)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if eval_dataset is not None and not isinstance(eval_dataset, (str, dict, QuadrupleDataset)):
            eval_dataset = encoded_quadruples(eval_dataset, "eval_dataset", self.processing_class, self.args)
        # Trainer evaluates a dict of eval sets one by one with the prefix eval_<name>; log() names ours so.
        self._eval_prefix = metric_key_prefix
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        averaged = {name: sum(values) / len(values) for name, values in self._metrics[mode].items() if values}
        if mode == "eval":
            averaged = {f"{self._eval_prefix}_{name}": value for name, value in averaged.items()}
        logs.update(averaged)
        self._metrics[mode].clear()
        super().log(logs, start_time)
