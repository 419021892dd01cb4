"""Pretrain MedVL on image-report pairs: contrastive (exact over the whole global batch) + MLM + ITM.

    accelerate launch train/pretrain.py --config train/configs/pretrain_swin384.yaml \\
        --data mimic-cxr:/data/mimic-cxr-jpg --output_dir runs/p1
    accelerate launch --multi_gpu --num_processes 8 train/pretrain.py ... --global_batch_size 2048
    accelerate launch --config_file train/configs/accelerate_1node_8gpu_fsdp.yaml train/pretrain.py ...  # sharded
    accelerate launch train/pretrain.py ... --resume_from runs/p1/checkpoint-last

The run folder gets run_config.yaml (every argument, re-usable with --config), the tokenizer,
metrics.jsonl (every step), TensorBoard logs, checkpoint-<step>/ (+ checkpoint-last,
checkpoint-best), loss_curve.png and train_summary.json.

Preemption: on SIGTERM or SIGUSR1 (what SLURM and Kubernetes send before they kill a job) every rank finishes the
current optimizer step, the run writes a complete checkpoint, logs why it stopped (train_summary.json: stop_reason
"preempted:SIGTERM") and exits with status 0; `--resume_from auto` (or `latest`) in the requeued job continues
exactly. Under `accelerate launch` the launcher forwards SIGTERM to the ranks and waits 30 s before it kills them.
"""

import contextlib
import functools
import json
import math
import signal
import time
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import (
    DistributedType,
    ProjectConfiguration,
    is_mps_available,
    is_xpu_available,
    parse_flag_from_env,
    set_seed,
)
from torch.distributed.fsdp import FullyShardedDataParallel
from tqdm.auto import tqdm

from modeling_medvl import MedVLConfig, MedVLForPreTraining, contrastive_loss
from processing.augmentation import JointAugmentation
from train import checkpointing as ckpt
from train.contrastive_accumulation import ExactAccumulationStep
from train.data_loading import (
    GlobalBatchSampler,
    PretrainCollator,
    make_map_loader,
    make_stream_loader,
    micro_batch_groups,
)
from train.data_sources import default_validation_spec, load_source, load_training_data
from train.logging_utils import (
    LOSS_CURVE_FILE, MetricsHistory, get_logger, plot_loss_curves, tensorboard_hparams, term_priors,
)
from train.optim import build_optimizer, build_scheduler, schedule_warnings
from train.pretrain_setup import (
    build_model, build_processor, enable_activation_checkpointing, prepare_tokenizer, preset_config, token_ids,
)
from train.run_config import (
    args_as_dict,
    parse_pretrain_args,
    resolve_accumulation,
    resolve_warmup_steps,
    save_run_config,
)
from train.user_errors import UserError, run_main
from train.zero_shot_eval import evaluate_pretraining, load_prompts

logger = get_logger()


def accelerator_device_available() -> bool:
    return torch.cuda.is_available() or is_xpu_available() or is_mps_available()


def refuse_unsupported_launch():
    """Refuse, before any work, the `accelerate launch` back-end this loop cannot run.

    DeepSpeed: the exact-accumulation step runs its own micro-batch loop (one backward each, synced on the last) and
    steps the optimizer once; a DeepSpeed engine counts every backward as a micro-step of its own, so it would step
    per micro-batch and break the exact global-batch loss."""
    # Set by `accelerate launch` for a DeepSpeed config.
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise UserError(
            "DeepSpeed is not supported by pretrain.py (it would step the optimizer once per micro-batch): launch "
            "with DDP or FSDP instead (--config_file train/configs/accelerate_1node_8gpu_ddp.yaml or "
            "accelerate_1node_8gpu_fsdp.yaml)"
        )


def check_fsdp_settings(plugin, torch_compile: bool):
    """The FSDP settings this loop runs with (see `PretrainingRun.sharded`), else a `UserError` naming the fix."""
    fix = "(see train/configs/accelerate_1node_8gpu_fsdp.yaml)"
    if getattr(plugin, "fsdp_version", 1) != 1:  # accelerate before 1.6 has FSDP 1 only
        raise UserError("pretrain.py runs FSDP 1 (evaluation gathers the full weights with its summon_full_params): "
                        f"set fsdp_version: 1 in the Accelerate config {fix}")
    if not plugin.use_orig_params:
        raise UserError("pretrain.py needs fsdp_use_orig_params: true in the Accelerate config (the optimizer's "
                        f"weight-decay groups and the temperature's clamp act on the model's own parameters) {fix}")
    if torch_compile:
        raise UserError("--torch_compile is not supported with FSDP by pretrain.py yet: leave it out, or launch with "
                        "DDP")


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run is diverging."""


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PretrainingRun:
    def __init__(self, model_args, data_args, train_args, after_step=None):
        self.model_args, self.data_args, self.args = model_args, data_args, train_args
        self.after_step = after_step  # called with the step number once a step (and its checkpoint) is done
        self.output_dir = Path(train_args.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        find_unused = train_args.ddp_find_unused_parameters
        if find_unused is None:
            config = preset_config(model_args)
            find_unused = bool(model_args.model_name_or_path) or min(
                config.itc_weight, config.mlm_weight, config.itm_weight
            ) == 0
        refuse_unsupported_launch()
        self.accelerator = Accelerator(
            # Without cpu=True, accelerate treats each rank of a multi-process CPU launch as a lone process.
            cpu=not accelerator_device_available(),
            mixed_precision=train_args.mixed_precision,
            log_with=None if train_args.report_to == "none" else train_args.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "tensorboard")
            ),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
        )
        acc = self.accelerator
        if self.sharded:
            check_fsdp_settings(acc.state.fsdp_plugin, model_args.torch_compile)
        elif parse_flag_from_env("ACCELERATE_USE_FSDP"):  # set by `accelerate launch` for an FSDP config
            raise UserError(
                f"FSDP is not supported by pretrain.py on {acc.device.type} ranks: accelerate shards with FSDP on "
                "accelerators (GPUs) only and would run this as DDP; launch with DDP (--config_file "
                "train/configs/accelerate_1node_8gpu_ddp.yaml), or with the FSDP config on GPUs"
            )
        self.accumulation, self.global_batch = resolve_accumulation(
            train_args.per_device_batch_size, acc.num_processes, train_args.gradient_accumulation_steps,
            train_args.global_batch_size,
        )
        set_seed(train_args.seed)
        self.history = MetricsHistory(self.output_dir)
        self.state = {"step": 0, "epoch": 0, "step_in_epoch": 0, "best_metric": None, "best_step": None,
                      "evals_without_improvement": 0, "consecutive_nonfinite": 0, "skipped_steps": 0}
        self._setup_data_and_model()
        self._setup_optimization()

    # ----------------------------------------------------------------------------------------- setup
    def _setup_data_and_model(self):
        acc, data_args, args = self.accelerator, self.data_args, self.args
        cache = self.output_dir / "data_cache"
        self.data_sources = []  # what each source gave: split, views, rows (logged and saved in run_config.yaml)
        self.train_data = load_training_data(
            data_args.data, cache, acc, args.seed, data_args.shuffle_buffer, num_workers=data_args.num_workers,
            record=self.data_sources,
        )
        self.streaming = isinstance(self.train_data, datasets.IterableDataset)
        resume = ckpt.resolve_resume(args.resume_from, self.output_dir) if args.resume_from else None
        self.resume_checkpoint = resume
        text_config = preset_config(self.model_args).text_config
        if resume is not None and not data_args.tokenizer:
            data_args.tokenizer = str(resume)  # the checkpoint holds the run's tokenizer
        self.tokenizer = prepare_tokenizer(data_args, text_config, self.train_data, self.output_dir, acc)
        if resume is not None:
            self.model = MedVLForPreTraining.from_pretrained(str(resume))
            if self.model_args.gradient_checkpointing:
                enable_activation_checkpointing(self.model)
        else:
            self.model = build_model(self.model_args, self.tokenizer)
        config = self.model.config
        self.processor = build_processor(self.tokenizer, config.vision_config.image_size)
        mlm_probability = data_args.mlm_probability if config.mlm_weight > 0 else None
        augmentation = (
            JointAugmentation(
                horizontal_flip=data_args.flip != "off", swap_laterality_on_flip=data_args.flip == "swap_laterality"
            )
            if data_args.augment else None
        )
        self.collator = PretrainCollator(
            self.processor, augmentation, mlm_probability, data_args.max_text_length, args.seed
        )
        validation_spec = data_args.validation_data or default_validation_spec(data_args.data, data_args.validation_size)
        self.validation_data = None
        if validation_spec and args.eval_steps:
            self.validation_data = load_source(validation_spec, cache, acc, num_workers=data_args.num_workers,
                                               role="validation", record=self.data_sources)
        elif args.eval_steps:
            logger.warning("no --validation_data: zero-shot evaluation and early stopping are off")
        self.prompts = load_prompts(data_args.zero_shot_prompts)

        if self.streaming:
            if not args.max_steps:
                raise UserError("--max_steps is required with streamed (wds:) data, whose length is unknown")
            self.steps_per_epoch = None
            self.max_steps = args.max_steps
        else:
            self.steps_per_epoch = len(self.train_data) // self.global_batch
            if self.steps_per_epoch == 0:
                raise UserError(
                    f"the training set has {len(self.train_data)} rows, fewer than one global batch of "
                    f"{self.global_batch} (lower --per_device_batch_size or --global_batch_size)"
                )
            self.max_steps = args.max_steps or max(1, math.floor(self.steps_per_epoch * args.num_epochs))
        self.warmup_steps = resolve_warmup_steps(self.max_steps, args.warmup_steps, args.warmup_ratio)

    def _setup_optimization(self):
        acc, args = self.accelerator, self.args
        optimizer = build_optimizer(
            self.model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2), args.adam_epsilon
        )
        # The scheduler stays outside accelerate: a prepared one steps once per process per step.
        self.scheduler = build_scheduler(optimizer, self.warmup_steps, self.max_steps)
        # Read before FSDP wraps the model (its parameters are then this rank's shards, under wrapped names).
        self.checkpoint_bytes = ckpt.estimated_checkpoint_bytes(self.model), ckpt.weights_bytes(self.model)
        self.tied_aliases = ckpt.tied_parameter_aliases(self.model)
        model = torch.compile(self.model) if self.model_args.torch_compile else self.model
        self.model, self.optimizer = acc.prepare(model, optimizer)
        config = self.unwrapped.config
        weights = {name: getattr(config, f"{name}_weight") for name in ("itc", "mlm", "itm")}
        if config.fusion_type == "none":
            weights["itm"] = 0.0
        self.step_fn = ExactAccumulationStep(
            acc, contrastive_loss, weights, label_aware_itc=config.contrastive_targets == "label_aware"
        )
        if self.resume_checkpoint is not None:
            self._load_training_state(self.resume_checkpoint)

    @property
    def sharded(self) -> bool:
        """FSDP (1, with the model's own parameters): each rank holds a shard of the weights, gradients and optimizer
        state. Checkpoints gather the full model and optimizer state onto the main process (`_states_to_save`),
        evaluation gathers the full weights on every rank (`_full_weights`); the contrastive loss gathers features,
        not weights, so it is the same as under DDP, and FSDP averages gradients over the ranks as DDP does."""
        return self.accelerator.distributed_type == DistributedType.FSDP

    @property
    def unwrapped(self):
        model = self.accelerator.unwrap_model(self.model)
        # The torch.compile wrapper's original module (accelerate before 1.2 has no `keep_torch_compile`).
        return getattr(model, "_orig_mod", model)

    def _resolved_values(self):
        return {
            "num_processes": self.accelerator.num_processes,
            "gradient_accumulation_steps": self.accumulation,
            "global_batch_size": self.global_batch,
            "max_steps": self.max_steps,
            "warmup_steps": self.warmup_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "vocab_size": len(self.tokenizer),
            "train_rows": None if self.streaming else len(self.train_data),
            "data_sources": self.data_sources,
            "model_config": self.unwrapped.config.to_diff_dict(),
        }

    # ------------------------------------------------------------------------------- checkpoints
    def _states_to_save(self, with_optimizer: bool = True):
        """(model state, optimizer state) for the main process to write. Under FSDP both are gathered in full from
        every rank's shards (a collective: every rank calls this); else the model's is None (save_pretrained reads
        the model itself)."""
        if self.sharded:
            model_state, optimizer_state = ckpt.gather_full_state(
                self.model, self.optimizer.optimizer if with_optimizer else None, self.accelerator.device
            )
            return {k: v for k, v in model_state.items() if k not in self.tied_aliases}, optimizer_state
        return None, self.optimizer.state_dict() if with_optimizer else None

    def _full_weights(self):
        """A context in which the unwrapped model holds its full weights on every rank (FSDP shards them outside its
        forward, and evaluation calls the model's encoders directly)."""
        if not self.sharded:
            return contextlib.nullcontext()
        return FullyShardedDataParallel.summon_full_params(self.model, writeback=False)

    def _write_model_files(self, folder, model_state=None):
        self.unwrapped.save_pretrained(str(folder), state_dict=model_state)
        self.processor.save_pretrained(str(folder))

    def _write_checkpoint_files(self, folder, model_state, optimizer_state):
        self._write_model_files(folder, model_state)
        torch.save(optimizer_state, folder / ckpt.OPTIMIZER_STATE)
        torch.save(self.scheduler.state_dict(), folder / ckpt.SCHEDULER_STATE)
        if self.accelerator.scaler is not None:
            torch.save(self.accelerator.scaler.state_dict(), folder / "scaler.pt")
        state = dict(self.state, global_batch_size=self.global_batch, num_processes=self.accelerator.num_processes,
                     data=ckpt.data_signature(self.data_args.data), train_rows=self._train_rows())
        (folder / ckpt.TRAINER_STATE).write_text(json.dumps(state, indent=2))

    def _train_rows(self):
        return None if self.streaming else len(self.train_data)

    def _check_resume_matches(self, folder, saved):
        """Stop before any step when the checkpoint is of another model, data set or global batch: resuming it would
        silently continue a different run. (Checkpoints that predate the data record skip the data checks.)"""
        if saved["global_batch_size"] != self.global_batch:
            raise UserError(
                f"--resume_from {folder}: the checkpoint was trained with global batch {saved['global_batch_size']}, "
                f"this run has {self.global_batch} (exact resume needs the same global batch: set --global_batch_size)"
            )
        model_args = self.model_args
        if model_args.model_name_or_path:
            expected = MedVLConfig.from_pretrained(model_args.model_name_or_path).to_dict()
        else:
            expected = preset_config(model_args).to_dict()
            expected["text_config"].update(token_ids(self.tokenizer))
        differences = ckpt.config_differences(MedVLConfig.from_pretrained(str(folder)).to_dict(), expected)
        if differences:
            raise UserError(
                f"--resume_from {folder}: the checkpoint is of another model config (checkpoint -> this run: "
                f"{'; '.join(differences[:4])}{'; ...' if len(differences) > 4 else ''}) (resume with the run's "
                "--model_preset, --model_overrides and --tokenizer, see its run_config.yaml, or start a new "
                "--output_dir)"
            )
        data = ckpt.data_signature(self.data_args.data)
        if saved.get("data", data) != data:
            raise UserError(f"--resume_from {folder}: the checkpoint was trained on --data {' '.join(saved['data'])}, "
                            f"this run reads {' '.join(data)} (resume with the same --data, or start a new "
                            "--output_dir)")
        if saved.get("train_rows", self._train_rows()) != self._train_rows():
            raise UserError(f"--resume_from {folder}: the training set had {saved['train_rows']} rows, it has "
                            f"{self._train_rows()} now (the data changed since; restore it, or start a new "
                            "--output_dir)")
        if saved["num_processes"] != self.accelerator.num_processes and self.accelerator.is_main_process:
            logger.warning(f"{folder} was written by {saved['num_processes']} processes, this run has "
                           f"{self.accelerator.num_processes}: the global batch is the same, but random draws are per "
                           "process, so the run will not repeat an uninterrupted one exactly")

    def _load_training_state(self, folder):
        saved = ckpt.load_trainer_state(folder)
        self._check_resume_matches(folder, saved)
        # Keyed by name when an FSDP run wrote it, by position otherwise: either run resumes the other's checkpoint.
        optimizer_state = torch.load(folder / ckpt.OPTIMIZER_STATE, weights_only=False)
        if self.sharded:
            ckpt.load_full_optimizer_state(self.model, self.optimizer.optimizer,
                                           ckpt.optimizer_state_by_name(optimizer_state))
        else:
            self.optimizer.load_state_dict(ckpt.optimizer_state_by_position(optimizer_state))
        self.scheduler.load_state_dict(torch.load(folder / ckpt.SCHEDULER_STATE, weights_only=False))
        if self.accelerator.scaler is not None and (folder / "scaler.pt").is_file():
            self.accelerator.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=False))
        self.state.update({key: saved[key] for key in self.state})
        rng = ckpt.load_rng_state(folder, self.accelerator.process_index)
        if rng is None:
            logger.warning(f"{folder} has no RNG state for rank {self.accelerator.process_index}: dropout will differ")
        else:
            ckpt.restore_rng_state(rng)
        if self.accelerator.is_main_process:
            self.history.truncate_after(self.state["step"])
        logger.info(f"resumed from {folder} at step {self.state['step']}")

    def _save_step_checkpoint(self):
        step = self.state["step"]
        model_state, optimizer_state = self._states_to_save()
        write = functools.partial(self._write_checkpoint_files, model_state=model_state,
                                  optimizer_state=optimizer_state)
        ckpt.save_checkpoint(self.accelerator, self.output_dir, step, write, self.args.save_total_limit)

    def _check_disk_space(self):
        """Before the first step: warn, with the numbers, when the checkpoints this run keeps may not fit on disk."""
        args = self.args
        size, weights = self.checkpoint_bytes
        saves = 1  # the last step's
        if args.save_steps:  # every save_steps-th step from here on, and the last one
            saves = self.max_steps // args.save_steps - self.state["step"] // args.save_steps
            saves += 1 if self.max_steps % args.save_steps else 0
        best = weights if self.validation_data is not None else 0
        warning = ckpt.disk_space_warning(self.output_dir, size, saves, args.save_total_limit, best)
        if warning:
            logger.warning(warning)
        else:
            logger.info(f"one checkpoint: about {ckpt.readable_size(size)}; up to "
                        f"{min(saves, args.save_total_limit)} kept")

    def _check_schedule(self):
        """Before the first step: warn, with the numbers, when eval, save or warmup fall outside the run."""
        args = self.args
        per_epoch = f" ({self.steps_per_epoch} steps per epoch)" if self.steps_per_epoch else ""
        for message in schedule_warnings(self.max_steps, self.warmup_steps, args.eval_steps, args.save_steps,
                                         self.validation_data is not None, args.early_stopping_patience):
            logger.warning(f"{message}{per_epoch}: set --max_steps / --num_epochs, --eval_steps, --save_steps or "
                           "--warmup_steps to fit")

    # ------------------------------------------------------------------------------------- data
    def _epoch_batches(self):
        acc, args, state = self.accelerator, self.args, self.state
        self.collator.epoch = state["epoch"]
        workers = self.data_args.num_workers
        if self.streaming:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(self.train_data, acc.process_index, acc.num_processes)
            stream.set_epoch(state["epoch"])
            consumed = state["step_in_epoch"] * self.accumulation * args.per_device_batch_size
            workers = min(workers, stream.num_shards)
            loader = make_stream_loader(
                stream.skip(consumed), self.collator, args.per_device_batch_size, workers, args.seed + state["epoch"]
            )
        else:
            sampler = GlobalBatchSampler(
                len(self.train_data), args.per_device_batch_size, acc.num_processes, acc.process_index,
                self.accumulation, args.seed, epoch=state["epoch"], start_step=state["step_in_epoch"],
            )
            loader = make_map_loader(self.train_data, self.collator, sampler, workers)
        return micro_batch_groups(loader, self.accumulation)

    # ------------------------------------------------------------------------------------ steps
    def _train_step(self, micro_batches):
        """One optimizer step. `micro_batches` stay on the host: the step moves one at a time to the device."""
        acc, args, state = self.accelerator, self.args, self.state
        self.model.train()
        losses = self.step_fn(self.model, micro_batches)
        grad_norm = float("nan")
        if losses.finite:
            # An infinite limit measures the norm without clipping; accelerate's clip measures the whole model's
            # norm under FSDP too, where each rank holds a shard of the gradients.
            limit = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
            grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), limit))
        # fp16: the grad scaler decides. Its step skips the update on an overflow (inf/NaN gradients) and its update
        # lowers the scale; skipping its step instead would leave the gradients unscaled-but-not-updated, and the
        # next unscale_() would raise. Without a scaler a non-finite gradient skips the step here.
        scaler_decides = losses.finite and acc.scaler is not None
        if scaler_decides or (losses.finite and math.isfinite(grad_norm)):
            self.optimizer.step()
        finite = losses.finite and math.isfinite(grad_norm) and not (scaler_decides and acc.optimizer_step_was_skipped)
        if finite:
            self.unwrapped.clamp_logit_scale_()  # the forward only guards it: keep the parameter itself in range
            state["consecutive_nonfinite"] = 0
        elif scaler_decides:  # an fp16 overflow is the scaler's normal back-off, not a diverging loss
            state["skipped_steps"] += 1
            logger.warning(f"step {state['step'] + 1}: fp16 gradient overflow (grad norm {grad_norm}); the grad scaler "
                           f"skipped the update and lowered its scale to {acc.scaler.get_scale():g}")
        else:
            state["consecutive_nonfinite"] += 1
            state["skipped_steps"] += 1
            logger.warning(
                f"step {state['step'] + 1}: non-finite loss {losses.loss} / grad norm {grad_norm} "
                f"(terms {losses.terms}); step skipped ({state['consecutive_nonfinite']} in a row)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        state["step"] += 1
        state["step_in_epoch"] += 1
        return losses, grad_norm, lr, finite

    def _log_step(self, losses, grad_norm, lr, finite, seconds):
        step = self.state["step"]
        record = {
            "kind": "train", "step": step, "loss": losses.loss, "terms": losses.terms, "lr": lr,
            "logit_scale": losses.logit_scale, "grad_norm": grad_norm, "skipped": not finite,
            "replay_error": losses.replay_error if math.isfinite(losses.replay_error) else None,  # None: not replayed
            "pairs_per_second": self.global_batch / seconds,
        }
        if self.accelerator.is_main_process:
            self.history.append(record)
        if step % self.args.logging_steps == 0 or step == self.max_steps:
            values = {"train/loss": losses.loss, "train/lr": lr, "train/logit_scale": losses.logit_scale,
                      "train/temperature": 1.0 / losses.logit_scale, "train/grad_norm": grad_norm,
                      "train/pairs_per_second": record["pairs_per_second"]}
            values.update({f"train/{name}": value for name, value in losses.terms.items()})
            if record["replay_error"] is not None:
                values["train/replay_error"] = record["replay_error"]
            self.accelerator.log(values, step=step)
        return record

    def _evaluate(self):
        acc, state = self.accelerator, self.state
        # Every rank embeds its share of the validation rows; all get the same results.
        eval_model = getattr(self.unwrapped, "medvl", self.unwrapped)
        with self._full_weights():
            results = evaluate_pretraining(
                eval_model, self.processor, self.validation_data, self.prompts,
                batch_size=2 * self.args.per_device_batch_size, max_length=self.data_args.max_text_length,
                device=acc.device, accelerator=acc,
            )
        metric_name = "zero_shot_auc" if "zero_shot_auc" in results else "recall@5"
        metric = results[metric_name]
        record = {"kind": "eval", "step": state["step"], "metric": metric_name, **results}
        if acc.is_main_process:
            self.history.append(record)
        acc.log({f"eval/{k}": v for k, v in results.items() if isinstance(v, float)}, step=state["step"])
        logger.info(f"step {state['step']}: {metric_name} {metric:.4f} (recall@5 {results['recall@5']:.3f})")
        if state["best_metric"] is None or metric > state["best_metric"]:
            state.update(best_metric=metric, best_step=state["step"], evals_without_improvement=0)
            model_state, _ = self._states_to_save(with_optimizer=False)
            write = functools.partial(self._write_model_files, model_state=model_state)
            ckpt.save_best(acc, self.output_dir, write, {k: v for k, v in record.items()})
        else:
            state["evals_without_improvement"] += 1
        patience = self.args.early_stopping_patience  # 0 or unset: never, as in fine-tuning
        return bool(patience) and state["evals_without_improvement"] >= patience

    # ------------------------------------------------------------------------------- preemption
    def _catch_preemption(self) -> dict:
        """Handlers that only note a preemption signal (acted on at the next step boundary); the previous ones."""
        self.preempted_by = 0

        def note(signum, frame):
            self.preempted_by = signum

        previous = {}
        for number in PREEMPTION_SIGNALS:
            try:
                previous[number] = signal.signal(number, note)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    def _preemption_signal(self):
        """The signal's name once any rank has received one (all ranks agree at the same step), else None."""
        flag = torch.tensor([self.preempted_by], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            # gather, not reduce("max"): accelerate 1.1's reduce has no "max" and sums (two SIGTERMs read as 30).
            flag = self.accelerator.gather(flag).max()
        return signal.Signals(int(flag.item())).name if flag.item() else None

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        previous_handlers = self._catch_preemption()
        try:
            return self._train()
        finally:
            for number, handler in previous_handlers.items():
                signal.signal(number, handler)

    def _train(self) -> dict:
        acc, args, state = self.accelerator, self.args, self.state
        values = args_as_dict(self.model_args, self.data_args, args)
        if acc.is_main_process:
            save_run_config(self.output_dir / "run_config.yaml", (self.model_args, self.data_args, args),
                            self._resolved_values())
            for key, value in values.items():
                logger.info(f"config {key} = {value}")
            logger.info(f"resolved {self._resolved_values()}")
            self._check_schedule()
            self._check_disk_space()
        acc.init_trackers("pretrain", config=tensorboard_hparams(values))
        progress = tqdm(total=self.max_steps, initial=state["step"], desc="pretrain", dynamic_ncols=True,
                        disable=not acc.is_main_process)
        started, start_step, stop_reason = time.perf_counter(), state["step"], "max_steps"
        while state["step"] < self.max_steps and stop_reason == "max_steps":
            tick = time.perf_counter()
            for micro_batches in self._epoch_batches():
                losses, grad_norm, lr, finite = self._train_step(micro_batches)
                record = self._log_step(losses, grad_norm, lr, finite, time.perf_counter() - tick)
                progress.update(1)
                progress.set_postfix(loss=f"{losses.loss:.4f}", pairs_s=f"{record['pairs_per_second']:.1f}")
                if state["consecutive_nonfinite"] >= args.max_consecutive_nonfinite:
                    raise NonFiniteLossError(
                        f"stopping at step {state['step']}: {state['consecutive_nonfinite']} non-finite losses in a "
                        f"row (--max_consecutive_nonfinite {args.max_consecutive_nonfinite}); last terms "
                        f"{losses.terms}. Lower the learning rate, check the data, or use bf16 instead of fp16."
                    )
                step = state["step"]
                if self.validation_data is not None and args.eval_steps and step % args.eval_steps == 0:
                    if self._evaluate():
                        stop_reason = "early_stopping"
                received = self._preemption_signal()
                if received and step < self.max_steps:
                    stop_reason = f"preempted:{received}"
                    logger.warning(f"step {step}: {received} received: saving a checkpoint and stopping "
                                   "(continue with --resume_from latest)")
                if (args.save_steps and step % args.save_steps == 0) or step == self.max_steps or stop_reason != "max_steps":
                    self._save_step_checkpoint()
                if self.after_step is not None:
                    self.after_step(step)
                if step >= self.max_steps or stop_reason != "max_steps":
                    break
                tick = time.perf_counter()
            else:  # the epoch ran out
                state["epoch"] += 1
                state["step_in_epoch"] = 0
        progress.close()
        return self._finish(time.perf_counter() - started, state["step"] - start_step, stop_reason)

    def _finish(self, seconds, steps, stop_reason) -> dict:
        acc = self.accelerator
        summary = {
            "stop_reason": stop_reason, "steps": self.state["step"], "steps_this_launch": steps,
            "seconds_this_launch": seconds, "skipped_steps": self.state["skipped_steps"],
            "best_metric": self.state["best_metric"], "best_step": self.state["best_step"],
            "global_batch_size": self.global_batch, "num_processes": acc.num_processes,
        }
        if acc.is_main_process:
            train_records = self.history.read("train")
            summary["final_loss"] = train_records[-1]["loss"] if train_records else None
            evals = self.history.read("eval")
            summary["final_eval"] = evals[-1] if evals else None
            (self.output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
            if train_records:
                plot_loss_curves(self.history, self.output_dir / LOSS_CURVE_FILE, term_priors(self.global_batch))
            logger.info(f"done: {summary}")
        acc.end_training()
        return summary


def main(argv=None, after_step=None):
    model_args, data_args, train_args = parse_pretrain_args(argv)
    return PretrainingRun(model_args, data_args, train_args, after_step).train()


if __name__ == "__main__":
    run_main(main)
