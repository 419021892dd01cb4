"""MedVL's pretraining losses as small functions: contrastive (ITC, exact under torch.distributed), masked language
modelling (MLM) and image-text matching with in-batch hard negatives (ITM)."""

import torch
import torch.distributed as dist
from torch.nn import functional as F

IGNORE_INDEX = -100


def _group_rank_and_size(process_group) -> tuple[int, int]:
    """(rank, world size) within `process_group`; (0, 1) for `None`, the local computation."""
    if process_group is None:
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


def gather_with_grad(features: torch.Tensor, process_group) -> torch.Tensor:
    """Concatenate `features` `(local_batch, dim)` from every rank of `process_group` in rank order, with gradients
    flowing back to every rank's own slice. Identity for `process_group=None`. All ranks must hold the same local
    batch size."""
    _, world_size = _group_rank_and_size(process_group)
    if world_size == 1:
        return features
    sizes = [torch.zeros(1, dtype=torch.long, device=features.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([features.shape[0]], device=features.device), group=process_group)
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"contrastive_loss needs the same local batch size on every rank, got {[int(s) for s in sizes]}: "
            "drop the last incomplete batch (drop_last=True) or pad the data set."
        )
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features, group=process_group), dim=0)


def gather_ids(ids: torch.Tensor, process_group) -> torch.Tensor:
    """Concatenate an integer tensor `(local_batch,)` from every rank of `process_group` in rank order (no
    gradient). Identity for `process_group=None`."""
    _, world_size = _group_rank_and_size(process_group)
    if world_size == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(world_size)]
    dist.all_gather(parts, ids.contiguous(), group=process_group)
    return torch.cat(parts)


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    process_group=None,
    match_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP), over the local batch or over the global batch of `process_group`.

    Args:
        image_embeds: `(local_batch, dim)` L2-normalised image embeddings; row i pairs with text row i.
        text_embeds: `(local_batch, dim)` L2-normalised text embeddings.
        logit_scale: scalar, the exp'd (and clamped) inverse temperature.
        process_group: `None` (default) scores this process's rows among themselves and runs no collective, so a
            call on one rank alone (evaluation, a callback) never waits for the others. A `torch.distributed`
            group (`torch.distributed.group.WORLD` for every rank) makes every rank of it score its local rows
            against all ranks' columns (gathered with gradients; labels offset by rank); every rank of the group
            must then make the call.
        match_groups: `None` (default): row i's only positive is column i. Else `(local_batch,)` integer ids: every
            column of the global batch with row i's id is a positive, with an equal share of a soft target (the
            label-aware target; duplicate and same-finding reports stop being false negatives).

    With a group, each rank returns the mean over its local rows. The all-gather's backward sums the gradient every
    rank's loss sends to a feature, and DDP averages parameter gradients over ranks, so the averaged update equals
    a single process computing this loss over the whole global batch; the mean of the ranks' returned values
    equals that single-process loss.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"contrastive_loss pairs image and text rows: got image_embeds {tuple(image_embeds.shape)} and "
            f"text_embeds {tuple(text_embeds.shape)}."
        )
    rank, _ = _group_rank_and_size(process_group)
    all_image_embeds = gather_with_grad(image_embeds, process_group)
    all_text_embeds = gather_with_grad(text_embeds, process_group)
    local_batch = image_embeds.shape[0]
    logits_per_image = logit_scale * image_embeds.float() @ all_text_embeds.float().t()
    logits_per_text = logit_scale * text_embeds.float() @ all_image_embeds.float().t()
    if match_groups is None:
        labels = torch.arange(local_batch, device=image_embeds.device) + rank * local_batch
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    if match_groups.shape != (local_batch,) or match_groups.is_floating_point():
        raise ValueError(
            f"match_groups must be integer ids of shape ({local_batch},), got {match_groups.dtype} "
            f"{tuple(match_groups.shape)}."
        )
    all_groups = gather_ids(match_groups.to(image_embeds.device), process_group)
    # Groups are symmetric, so one target matrix serves both directions.
    targets = (match_groups.to(image_embeds.device)[:, None] == all_groups[None, :]).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2


def mlm_loss(prediction_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `(batch, length, vocab)` logits against `(batch, length)` labels, `-100` ignored.
    Zero (with a gradient path) when no token is masked."""
    logits = prediction_logits.float().reshape(-1, prediction_logits.shape[-1])
    labels = mlm_labels.reshape(-1)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: list[int],
    mlm_probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `mlm_probability` of the real, non-special tokens; of those 80% become [MASK], 10% a
    random token, 10% stay. Returns `(masked_input_ids, labels)` with labels `-100` where nothing is predicted.
    At least one token per text with a maskable token is picked, so every example contributes."""
    device = input_ids.device
    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        maskable &= attention_mask.bool()
    for token_id in special_token_ids:
        maskable &= input_ids != token_id
    scores = torch.rand(input_ids.shape, device=device, generator=generator)
    picked = (scores < mlm_probability) & maskable
    # Guarantee one pick per row that has a maskable token: the one with the lowest score.
    lowest = scores.masked_fill(~maskable, 2.0).argmin(dim=1, keepdim=True)
    picked |= torch.zeros_like(picked).scatter(1, lowest, True) & maskable
    labels = input_ids.masked_fill(~picked, IGNORE_INDEX)
    action = torch.rand(input_ids.shape, device=device, generator=generator)
    masked_input_ids = input_ids.clone()
    masked_input_ids[picked & (action < 0.8)] = mask_token_id
    random_positions = picked & (action >= 0.8) & (action < 0.9)
    random_tokens = torch.randint(vocab_size, input_ids.shape, device=device, generator=generator)
    masked_input_ids[random_positions] = random_tokens[random_positions]
    return masked_input_ids, labels


def sample_hard_negatives(
    similarity: torch.Tensor, same_text: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """In-batch hard negatives for ITM, sampled in proportion to softmax similarity (ALBEF).

    Args:
        similarity: `(batch, batch)` image-to-text similarity logits (row i = image i).
        same_text: `(batch, batch)` bool, True where texts i and j are identical; those pairs are not negatives
            (duplicate reports are common in radiology).
    Returns `(image_rows, negative_text_for_image, text_rows, negative_image_for_text)`: index tensors of the
    anchors that have at least one valid negative, and the sampled partner for each.
    """
    weights = similarity.detach().float().softmax(dim=1).masked_fill(same_text, 0.0)
    image_rows = weights.sum(dim=1).gt(0).nonzero().squeeze(1)
    negative_texts = torch.multinomial(weights[image_rows], 1, generator=generator).squeeze(1)
    weights_t = similarity.detach().float().t().softmax(dim=1).masked_fill(same_text, 0.0)
    text_rows = weights_t.sum(dim=1).gt(0).nonzero().squeeze(1)
    negative_images = torch.multinomial(weights_t[text_rows], 1, generator=generator).squeeze(1)
    return image_rows, negative_texts, text_rows, negative_images


def itm_loss(itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `(n, 2)` match logits against `(n,)` labels (1 = matching pair)."""
    return F.cross_entropy(itm_logits.float(), itm_labels)


__all__ = [
    "IGNORE_INDEX",
    "contrastive_loss",
    "gather_ids",
    "gather_with_grad",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "sample_hard_negatives",
]
