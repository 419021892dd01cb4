"""One optimizer step over a global batch larger than memory, with the contrastive loss exact.

The contrastive (ITC) loss couples every pair of the global batch, so averaging small-batch
losses is not the large-batch loss. GradCache's scheme makes it exact:

1. Pass 1, no grad: embed every micro-batch of this rank, saving torch's RNG state before each.
2. ITC over the WHOLE global batch, once, on detached copies of the cached embeddings (all of
   this rank's micro-batches; `contrastive_loss` gathers the other ranks' with gradients), and its
   gradient with respect to every cached embedding and to the temperature.
3. Pass 2, per micro-batch: restore its RNG state (dropout and ITM negative sampling repeat
   exactly; masking and augmentation are fixed in the data), recompute its embeddings with grad
   and back-propagate the cached embedding gradients through them (`sum(embeds * grad)`), plus
   its share of the per-micro-batch terms (MLM, ITM).

Gradient bookkeeping under DDP (which averages parameter gradients over P ranks):
`contrastive_loss` returns rank r's local-row mean L_r, and the global loss is L = mean_r L_r.
The all-gather's backward sums what every rank's loss sends to rank r's embeddings, so
d L_r / d e_r computed on rank r (with the collective) is P x dL/de_r, and DDP's average turns it
back into the exact dL/de_r. The temperature's d L_r / d(logit_scale) enters ONCE per step, through
the last micro-batch (the naive scheme adds it once per micro-batch, K times too much), and DDP's
average makes it dL/d(logit_scale). Gradients are synced only in the last micro-batch's backward
(`no_sync` before it).

With one micro-batch per rank there is nothing to cache: the model's own distributed ITC is already
the global-batch loss, and the step is a single forward-backward.

Per-micro-batch terms are weighted to equal their large-batch value: MLM by the micro-batch's
share of all masked tokens of the global batch (the model's MLM loss is a token mean), ITM by
1 / (micro-batches x ranks) (a mean over equal-sized micro-batches); both x P against DDP's
average. ITM draws its hard negatives within a micro-batch, so it matches a large batch only in
expectation. Masked tokens are counted from the batch's `mlm_labels`, or, when the model masks
`input_ids` itself (no `mlm_labels`), from the labels it returns in pass 1 (pass 2 replays the same
masks from the same RNG state).

Memory: the global batch stays where the loader left it (host memory, pinned if the loader pins);
each micro-batch is moved to the device when a pass uses it and freed before the next one moves,
so the device holds one micro-batch of inputs, not K.

Replay check: pass 2 must recompute pass 1's embeddings. The largest per-row relative L2
difference is compared with a tolerance per precision (`REPLAY_TOLERANCE`); above it the step
still applies (its gradient is approximate, not wrong) and a warning is logged, and the value is
returned with the step's losses for the metrics log.
"""

import contextlib
import logging
import math
from dataclasses import dataclass, field

import torch

MLM_LABELS_KEY = "mlm_labels"
IGNORE_INDEX = -100

# Largest relative difference of a replayed embedding row from its cached one, per `mixed_precision`.
# On CPU in fp32 a replay is exact (0); GPUs add non-deterministic reductions and, in fp32, TF32 matmuls
# (unit roundoff 2**-11). Reduced precision rounds each embedding to 2**-11 (fp16) or 2**-8 (bf16) relative, and
# a reordered reduction moves it by a few of those units. A replay that lost its RNG state (dropout masks redrawn)
# differs by 0.1 or more.
REPLAY_TOLERANCE = {"no": 1e-3, "fp16": 1e-2, "bf16": 5e-2, "fp8": 5e-2}

logger = logging.getLogger("medvl.pretrain")


@dataclass
class StepLosses:
    """Loss values of one global-batch step (identical on every rank)."""

    loss: float
    terms: dict = field(default_factory=dict)
    logit_scale: float = float("nan")
    replay_error: float = float("nan")  # relative; NaN when nothing was replayed (one micro-batch)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


def _torch_rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_torch_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _masked_tokens(labels):
    return (labels != IGNORE_INDEX).sum()


def relative_replay_error(live, cached):
    """Largest per-row L2 difference of `live` from `cached`, relative to the cached row's norm (a 0-d tensor)."""
    live, cached = live.float(), cached.float()
    return ((live - cached).norm(dim=-1) / cached.norm(dim=-1).clamp_min(1e-12)).max()


def _split_rows(tensor, sizes):
    return list(torch.split(tensor, sizes, dim=0))


class ExactAccumulationStep:
    """Compute gradients of one global batch, given as this rank's list of micro-batches.

    `itc_loss(image_embeds, text_embeds, logit_scale, process_group=...)` is `contrastive_loss`'s contract:
    this rank's rows in, the mean over them of the loss against every rank's rows out. The group is every
    process of the accelerator (`None`, no collective, in a single process).
    `loss_weights` maps term name ("itc", "mlm", "itm") to its weight in the composite loss.
    `label_aware_itc`: pass the micro-batches' `match_groups` to `itc_loss` (the model's
    `contrastive_targets="label_aware"`).
    `replay_tolerance`: default `REPLAY_TOLERANCE` of the accelerator's mixed precision.
    The micro-batches may live on the host: each is moved to the device by `to_device` when used.
    """

    def __init__(self, accelerator, itc_loss, loss_weights: dict, replay_tolerance: float | None = None,
                 label_aware_itc: bool = False):
        self.accelerator = accelerator
        self.label_aware_itc = label_aware_itc
        self.itc_loss = itc_loss
        self.loss_weights = {name: float(w) for name, w in loss_weights.items() if float(w) > 0}
        self.micro_batch_terms = tuple(name for name in self.loss_weights if name != "itc")
        precision = str(getattr(accelerator, "mixed_precision", "no"))
        self.replay_tolerance = REPLAY_TOLERANCE.get(precision, REPLAY_TOLERANCE["bf16"]) if replay_tolerance is None \
            else replay_tolerance
        self.process_group = torch.distributed.group.WORLD if accelerator.num_processes > 1 else None

    def to_device(self, micro_batch):
        # non_blocking: the copy from a pinned host batch overlaps with compute already queued.
        return {key: value.to(self.accelerator.device, non_blocking=True) for key, value in micro_batch.items()}

    def _forward(self, model, micro_batch, with_terms: bool):
        inputs = dict(micro_batch)
        if with_terms and self.micro_batch_terms:
            return model(**inputs, return_loss=True, loss_terms=self.micro_batch_terms)
        if self._masks_itself(micro_batch):  # pass 1 draws the masks pass 2 replays, to count their tokens
            return model(**inputs, return_loss=True, loss_terms=("mlm",))
        inputs.pop("mlm_input_ids", None)
        inputs.pop(MLM_LABELS_KEY, None)
        return model(**inputs, return_loss=False)

    def _masks_itself(self, micro_batch) -> bool:
        """MLM is on and the model masks this micro-batch's input_ids with torch's RNG (no labels given)."""
        return "mlm" in self.micro_batch_terms and MLM_LABELS_KEY not in micro_batch

    def _all_sum(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum")[0])

    def _all_mean(self, value: float) -> float:
        return self._all_sum(value) / self.accelerator.num_processes

    def _itc_gradients(self, image_embeds, text_embeds, logit_scale, match_groups=None):
        """Global-batch ITC (mean over ranks) and the gradients this rank back-propagates."""
        images = image_embeds.detach().float().requires_grad_(True)
        texts = text_embeds.detach().float().requires_grad_(True)
        scale = logit_scale.detach().float().clone().requires_grad_(True)
        groups = {"match_groups": match_groups} if self.label_aware_itc else {}
        with torch.enable_grad():
            local_loss = self.itc_loss(images, texts, scale, process_group=self.process_group, **groups)
            grad_images, grad_texts, grad_scale = torch.autograd.grad(local_loss, (images, texts, scale))
        return self._all_mean(float(local_loss.detach())), grad_images, grad_texts, grad_scale

    def _term_shares(self, masked_counts):
        """Each micro-batch's weight in the large-batch value of MLM (token share) and ITM (equal)."""
        total_masked = self._all_sum(float(sum(masked_counts)))
        micro_batches_total = len(masked_counts) * self.accelerator.num_processes
        return [
            {name: (count / total_masked if total_masked else 0.0) if name == "mlm" else 1.0 / micro_batches_total
             for name in self.micro_batch_terms}
            for count in masked_counts
        ]

    def _add_micro_batch_terms(self, surrogate, outputs, shares, term_sums):
        for name in self.micro_batch_terms:
            value = (outputs.loss_terms or {}).get(name)
            if value is None:  # e.g. ITM when every report of the micro-batch is identical
                continue
            value = value.float()
            term_sums[name] += shares[name] * float(value.detach())
            if shares[name]:
                surrogate = surrogate + self.loss_weights[name] * self.accelerator.num_processes * shares[name] * value
        return surrogate

    def _finish(self, itc, term_sums, logit_scale, replay_error=float("nan")):
        terms = {"itc": itc} if itc is not None else {}
        terms.update({name: self._all_sum(value) for name, value in term_sums.items()})
        loss = sum(self.loss_weights[name] * value for name, value in terms.items())
        return StepLosses(loss=float(loss), terms=terms, logit_scale=float(logit_scale), replay_error=replay_error)

    def _check_replay(self, replay_error) -> float:
        if self.accelerator.num_processes > 1:  # every rank reports the largest (accelerate 1.1's reduce has no max)
            replay_error = replay_error.detach().clone()
            torch.distributed.all_reduce(replay_error, op=torch.distributed.ReduceOp.MAX)
        replay_error = float(replay_error)
        if replay_error > self.replay_tolerance and self.accelerator.is_main_process:
            logger.warning(
                f"micro-batch replay differs from its cached embeddings by {replay_error:.2e} relative "
                f"(tolerance {self.replay_tolerance:g} for mixed precision {self.accelerator.mixed_precision!r}): "
                "the step's gradient is approximate; the model's forward is not reproducible from the saved RNG "
                "state (randomness outside torch's RNG, or non-deterministic kernels)"
            )
        return replay_error

    def _single_pass(self, model, micro_batch) -> StepLosses:
        """One micro-batch per rank: the model's own distributed ITC is already exact, no cache needed."""
        micro_batch = self.to_device(micro_batch)
        with self.accelerator.autocast():
            outputs = model(**micro_batch, return_loss=True, loss_terms=("itc",) + self.micro_batch_terms,
                            contrastive_process_group=self.process_group)
        local_itc = outputs.loss_terms["itc"].float()
        itc = self._all_mean(float(local_itc.detach()))
        if not math.isfinite(itc):  # identical on every rank: all skip the backward together
            return StepLosses(loss=float("nan"), terms={"itc": itc}, logit_scale=float(outputs.logit_scale.detach()))
        term_sums = {name: 0.0 for name in self.micro_batch_terms}
        surrogate = self.loss_weights["itc"] * local_itc
        # The model returns the labels it was given or drew itself.
        masked = [int(_masked_tokens(outputs.mlm_labels))] if outputs.mlm_labels is not None else [0]
        surrogate = self._add_micro_batch_terms(surrogate, outputs, self._term_shares(masked)[0], term_sums)
        self.accelerator.backward(surrogate)
        return self._finish(itc, term_sums, outputs.logit_scale.detach())

    def __call__(self, model, micro_batches: list) -> StepLosses:
        accelerator = self.accelerator
        use_itc = "itc" in self.loss_weights
        if use_itc and len(micro_batches) == 1:
            return self._single_pass(model, micro_batches[0])
        sizes = [int(batch["pixel_values"].shape[0]) for batch in micro_batches]
        masked_counts = [
            None if self._masks_itself(batch) else
            int(_masked_tokens(batch[MLM_LABELS_KEY])) if MLM_LABELS_KEY in batch else 0
            for batch in micro_batches
        ]

        # Pass 1: embeddings of every micro-batch (and the masks the model draws itself), no graph kept.
        rng_states, image_cache, text_cache, logit_scale, itc = [None] * len(micro_batches), [], [], None, None
        if use_itc or None in masked_counts:
            with torch.no_grad():
                for index, host_batch in enumerate(micro_batches):
                    rng_states[index] = _torch_rng_state()
                    micro_batch = self.to_device(host_batch)
                    with accelerator.autocast():
                        outputs = self._forward(model, micro_batch, with_terms=False)
                    if masked_counts[index] is None:
                        masked_counts[index] = int(_masked_tokens(outputs.mlm_labels))
                    image_cache.append(outputs.image_embeds.detach())
                    text_cache.append(outputs.text_embeds.detach())
                    logit_scale = outputs.logit_scale.detach()
                    del micro_batch, outputs  # the next micro-batch moves to a device holding none
        if use_itc:
            match_groups = (
                torch.cat([batch["match_groups"] for batch in micro_batches]).to(accelerator.device)
                if self.label_aware_itc else None
            )
            itc, grad_images, grad_texts, grad_scale = self._itc_gradients(
                torch.cat(image_cache), torch.cat(text_cache), logit_scale, match_groups
            )
            if not math.isfinite(itc):  # identical on every rank: all skip the backward passes together
                return StepLosses(loss=float("nan"), terms={"itc": itc}, logit_scale=float(logit_scale))
            grad_images, grad_texts = _split_rows(grad_images, sizes), _split_rows(grad_texts, sizes)
        shares = self._term_shares(masked_counts)
        term_sums = {name: 0.0 for name in self.micro_batch_terms}
        replay_error = torch.zeros((), device=accelerator.device)  # read once after the loop: no per-micro-batch sync

        # Pass 2: recompute each micro-batch with grad and back-propagate its share.
        for index, host_batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            if rng_states[index] is not None:
                _restore_torch_rng_state(rng_states[index])
            micro_batch = self.to_device(host_batch)
            sync_context = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync_context:
                with accelerator.autocast():
                    outputs = self._forward(model, micro_batch, with_terms=True)
                surrogate = outputs.image_embeds.new_zeros(())
                if use_itc:
                    weight = self.loss_weights["itc"]
                    image_live, text_live = outputs.image_embeds.float(), outputs.text_embeds.float()
                    replay_error = torch.maximum(replay_error, torch.maximum(
                        relative_replay_error(image_live.detach(), image_cache[index]),
                        relative_replay_error(text_live.detach(), text_cache[index]),
                    ))
                    surrogate = surrogate + weight * (
                        (image_live * grad_images[index]).sum() + (text_live * grad_texts[index]).sum()
                    )
                    if last:
                        surrogate = surrogate + weight * grad_scale * outputs.logit_scale.float()
                surrogate = self._add_micro_batch_terms(surrogate, outputs, shares[index], term_sums)
                accelerator.backward(surrogate)
            last_scale = outputs.logit_scale.detach()
            del micro_batch, outputs, surrogate

        replay_error = self._check_replay(replay_error) if use_itc else float("nan")
        scale = logit_scale if logit_scale is not None else last_scale
        return self._finish(itc, term_sums, scale, replay_error)


__all__ = ["ExactAccumulationStep", "StepLosses"]
