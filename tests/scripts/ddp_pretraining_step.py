"""One MedVLForPreTraining training step under DDP, each rank on its half of a fixed global batch.

Launched by tests/test_model_distributed.py as

    accelerate launch --multi_gpu --num_processes 2 --main_process_port PORT \
        tests/scripts/ddp_pretraining_step.py OUTPUT.pt

Rank 0 writes the mean loss over ranks, each term, each rank's own loss and the (DDP-averaged) gradients to
OUTPUT.pt. The test compares them with one process running `forward_backward` over the whole global batch.

Which terms take part, and why:
- ITC: `contrastive_loss` gathers all ranks' features with gradients, so it is exact across ranks.
- MLM: masked positions are passed in (`mlm_input_ids` / `mlm_labels`) rather than drawn inside the model, and
  every text has the same number of masked tokens, so each rank's token-mean averages to the global token-mean.
- ITM is left out: its hard negatives are drawn from the *local* batch (`sample_hard_negatives` over a
  `(local_batch, local_batch)` similarity) by `torch.multinomial`, so a rank sees other candidates than a single
  process does over the whole batch. The term is per-rank by design, not a quantity to match.

The step runs a second time with the all-gather replaced by one that carries no gradient (the local slice keeps
its own): those gradients must differ, which shows the comparison can tell whether gradients flow through the
gather at all.
"""

import sys

import torch
import torch.distributed as dist

from modeling_medvl import MedVLConfig, MedVLForPreTraining
from modeling_medvl import losses_medvl

GLOBAL_BATCH = 8
SEQ_LEN = 16
MASKED_PER_TEXT = 3
LOSS_TERMS = ("itc", "mlm")


def build_model() -> MedVLForPreTraining:
    """Tiny preset, no dropout anywhere (ranks would otherwise draw different masks), identical on every rank."""
    config = MedVLConfig.from_preset("tiny", itm_weight=0.0, mlm_weight=0.5)
    torch.manual_seed(0)
    return MedVLForPreTraining(config).train()


def make_global_batch(config: MedVLConfig) -> dict[str, torch.Tensor]:
    """Fixed global batch: images, padded texts of varying length, and MLM inputs with MASKED_PER_TEXT per text."""
    text = config.text_config
    generator = torch.Generator().manual_seed(1234)
    image_size = config.vision_config.image_size
    pixel_values = torch.randn(GLOBAL_BATCH, config.vision_config.num_channels, image_size, image_size,
                               generator=generator)
    input_ids = torch.randint(5, text.vocab_size, (GLOBAL_BATCH, SEQ_LEN), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    lengths = torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (GLOBAL_BATCH,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        attention_mask[row, :length] = 1
        input_ids[row, 0] = text.bos_token_id
        input_ids[row, length - 1] = text.eos_token_id
        input_ids[row, length:] = text.pad_token_id
    mlm_input_ids = input_ids.clone()
    mlm_labels = torch.full_like(input_ids, losses_medvl.IGNORE_INDEX)
    for row, length in enumerate(lengths.tolist()):
        positions = 1 + torch.randperm(length - 2, generator=generator)[:MASKED_PER_TEXT]
        mlm_labels[row, positions] = input_ids[row, positions]
        mlm_input_ids[row, positions] = text.mask_token_id
    return {
        "pixel_values": pixel_values,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_input_ids": mlm_input_ids,
        "mlm_labels": mlm_labels,
    }


def forward_backward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], process_group=None
) -> tuple[torch.Tensor, dict]:
    """Loss and unweighted terms of one step (ITC over `process_group`'s ranks); gradients are left in the
    parameters."""
    output = model(**batch, return_loss=True, loss_terms=LOSS_TERMS, contrastive_process_group=process_group)
    output.loss.backward()
    return output.loss.detach(), {name: value.detach() for name, value in output.loss_terms.items()}


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients by name (DDP's `module.` prefix removed); parameters without a gradient are left out."""
    return {
        name.removeprefix("module."): parameter.grad.detach().clone()
        for name, parameter in model.named_parameters()
        if parameter.grad is not None
    }


def gather_without_grad(features: torch.Tensor, process_group) -> torch.Tensor:
    """The classic mistake: other ranks' features arrive as constants, so their losses send this rank nothing."""
    gathered = [torch.empty_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, features.detach())
    gathered[dist.get_rank()] = features
    return torch.cat(gathered, dim=0)


def main(output_path: str) -> None:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # cpu=True: without it accelerate 1.15 on a machine without GPUs treats each launched rank as a lone process.
    # find_unused_parameters: the ITM head takes no part in this step.
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    assert accelerator.num_processes == 2, f"expected 2 processes, got {accelerator.num_processes}"
    model = build_model()
    batch = make_global_batch(model.config)
    local_batch = {name: tensor.chunk(accelerator.num_processes)[accelerator.process_index]
                   for name, tensor in batch.items()}
    model = accelerator.prepare(model)

    def step():
        model.zero_grad(set_to_none=True)
        loss, terms = forward_backward(model, local_batch, dist.group.WORLD)
        rank_losses = accelerator.gather(loss[None])
        rank_terms = {name: accelerator.gather(value[None]).mean() for name, value in terms.items()}
        return rank_losses, rank_terms, gradients(model)

    rank_losses, rank_terms, grads = step()
    # Rank 0 alone (as in an evaluation or a callback) asks for the contrastive loss while rank 1 waits at the
    # barrier: without a group, the loss must stay local rather than enter a collective that never completes.
    rank_zero_alone = None
    if accelerator.is_main_process:
        with torch.no_grad():
            alone = accelerator.unwrap_model(model).medvl(
                input_ids=local_batch["input_ids"], pixel_values=local_batch["pixel_values"],
                attention_mask=local_batch["attention_mask"], return_loss=True,
            )
        expected = losses_medvl.contrastive_loss(alone.image_embeds, alone.text_embeds, alone.logit_scale)
        rank_zero_alone = {"loss": alone.loss, "local_loss": expected}
    accelerator.wait_for_everyone()
    losses_medvl.gather_with_grad = gather_without_grad
    _, _, grads_without_gather_grad = step()
    if accelerator.is_main_process:
        torch.save(
            {
                "num_processes": accelerator.num_processes,
                "rank_losses": rank_losses,
                "loss": rank_losses.mean(),
                "loss_terms": rank_terms,
                "gradients": grads,
                "gradients_without_gather_grad": grads_without_gather_grad,
                "rank_zero_alone": rank_zero_alone,
            },
            output_path,
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
