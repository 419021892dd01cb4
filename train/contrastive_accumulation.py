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
expectation.
"""

import contextlib
import math
from dataclasses import dataclass, field

import torch

MLM_LABELS_KEY = "mlm_labels"
IGNORE_INDEX = -100


@dataclass
class StepLosses:
    """Loss values of one global-batch step (identical on every rank)."""

    loss: float
    terms: dict = field(default_factory=dict)
    logit_scale: float = float("nan")

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


def _masked_token_count(micro_batch) -> int:
    labels = micro_batch.get(MLM_LABELS_KEY)
    return 0 if labels is None else int((labels != IGNORE_INDEX).sum())


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
    """

    def __init__(self, accelerator, itc_loss, loss_weights: dict, replay_tolerance: float = 1e-3,
                 label_aware_itc: bool = False):
        self.accelerator = accelerator
        self.label_aware_itc = label_aware_itc
        self.itc_loss = itc_loss
        self.loss_weights = {name: float(w) for name, w in loss_weights.items() if float(w) > 0}
        self.micro_batch_terms = tuple(name for name in self.loss_weights if name != "itc")
        self.replay_tolerance = replay_tolerance
        self.process_group = torch.distributed.group.WORLD if accelerator.num_processes > 1 else None

    def _forward(self, model, micro_batch, with_terms: bool):
        inputs = dict(micro_batch)
        if with_terms and self.micro_batch_terms:
            return model(**inputs, return_loss=True, loss_terms=self.micro_batch_terms)
        inputs.pop("mlm_input_ids", None)
        inputs.pop(MLM_LABELS_KEY, None)
        return model(**inputs, return_loss=False)

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

    def _term_shares(self, micro_batches):
        """Each micro-batch's weight in the large-batch value of MLM (token share) and ITM (equal)."""
        masked_counts = [_masked_token_count(batch) for batch in micro_batches]
        total_masked = self._all_sum(float(sum(masked_counts)))
        micro_batches_total = len(micro_batches) * self.accelerator.num_processes
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

    def _finish(self, itc, term_sums, logit_scale):
        terms = {"itc": itc} if itc is not None else {}
        terms.update({name: self._all_sum(value) for name, value in term_sums.items()})
        loss = sum(self.loss_weights[name] * value for name, value in terms.items())
        return StepLosses(loss=float(loss), terms=terms, logit_scale=float(logit_scale))

    def _single_pass(self, model, micro_batch) -> StepLosses:
        """One micro-batch per rank: the model's own distributed ITC is already exact, no cache needed."""
        with self.accelerator.autocast():
            outputs = model(**micro_batch, return_loss=True, loss_terms=("itc",) + self.micro_batch_terms,
                            contrastive_process_group=self.process_group)
        local_itc = outputs.loss_terms["itc"].float()
        itc = self._all_mean(float(local_itc.detach()))
        if not math.isfinite(itc):  # identical on every rank: all skip the backward together
            return StepLosses(loss=float("nan"), terms={"itc": itc}, logit_scale=float(outputs.logit_scale.detach()))
        term_sums = {name: 0.0 for name in self.micro_batch_terms}
        surrogate = self.loss_weights["itc"] * local_itc
        surrogate = self._add_micro_batch_terms(surrogate, outputs, self._term_shares([micro_batch])[0], term_sums)
        self.accelerator.backward(surrogate)
        return self._finish(itc, term_sums, outputs.logit_scale.detach())

    def __call__(self, model, micro_batches: list) -> StepLosses:
        accelerator = self.accelerator
        use_itc = "itc" in self.loss_weights
        if use_itc and len(micro_batches) == 1:
            return self._single_pass(model, micro_batches[0])
        sizes = [int(batch["pixel_values"].shape[0]) for batch in micro_batches]

        # Pass 1: embeddings of every micro-batch, no graph kept.
        rng_states, image_cache, text_cache, logit_scale, itc = [], [], [], None, None
        if use_itc:
            with torch.no_grad():
                for micro_batch in micro_batches:
                    rng_states.append(_torch_rng_state())
                    with accelerator.autocast():
                        outputs = self._forward(model, micro_batch, with_terms=False)
                    image_cache.append(outputs.image_embeds.detach())
                    text_cache.append(outputs.text_embeds.detach())
                    logit_scale = outputs.logit_scale.detach()
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
        else:
            rng_states = [None] * len(micro_batches)
        shares = self._term_shares(micro_batches)
        term_sums = {name: 0.0 for name in self.micro_batch_terms}
        replay_error = torch.zeros((), device=accelerator.device)  # read once after the loop: no per-micro-batch sync

        # Pass 2: recompute each micro-batch with grad and back-propagate its share.
        for index, micro_batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            if rng_states[index] is not None:
                _restore_torch_rng_state(rng_states[index])
            sync_context = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync_context:
                with accelerator.autocast():
                    outputs = self._forward(model, micro_batch, with_terms=True)
                surrogate = outputs.image_embeds.new_zeros(())
                if use_itc:
                    weight = self.loss_weights["itc"]
                    image_live, text_live = outputs.image_embeds.float(), outputs.text_embeds.float()
                    replay_error = torch.maximum(replay_error, torch.maximum(
                        (image_live.detach() - image_cache[index].float()).abs().max(),
                        (text_live.detach() - text_cache[index].float()).abs().max(),
                    ))
                    surrogate = surrogate + weight * (
                        (image_live * grad_images[index]).sum() + (text_live * grad_texts[index]).sum()
                    )
                    if last:
                        surrogate = surrogate + weight * grad_scale * outputs.logit_scale.float()
                surrogate = self._add_micro_batch_terms(surrogate, outputs, shares[index], term_sums)
                accelerator.backward(surrogate)

        replay_error = float(replay_error)
        if replay_error > self.replay_tolerance:
            raise RuntimeError(
                f"micro-batch replay differs from its cached embeddings by {replay_error:.2e} "
                f"(> {self.replay_tolerance:g}): the model's forward is not reproducible from the saved RNG "
                "state (randomness outside torch's RNG, or non-deterministic kernels)"
            )
        scale = logit_scale if logit_scale is not None else outputs.logit_scale.detach()
        return self._finish(itc, term_sums, scale)


__all__ = ["ExactAccumulationStep", "StepLosses"]
