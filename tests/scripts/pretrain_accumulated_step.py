"""One exact-accumulation pretraining step under `accelerate launch --multi_gpu --num_processes 2`.

Usage: pretrain_accumulated_step.py FIXTURE_DIR OUTPUT_FILE MICRO_BATCH_SIZE

FIXTURE_DIR holds `model/` (a saved MedVLForPreTraining) and `global_batch.pt` (collated inputs
of the whole global batch). Rank r takes rows [r*G/2, (r+1)*G/2) as the GlobalBatchSampler would
and splits them into micro-batches; rank 0 writes the step's losses and the synced gradients.
"""

import sys

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from modeling_medvl import MedVLForPreTraining, contrastive_loss
from train.contrastive_accumulation import ExactAccumulationStep


def main(fixture_dir, output_file, micro_batch_size):
    # cpu=True: on a machine without GPUs accelerate otherwise treats each launched rank as a lone process.
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    assert accelerator.num_processes == 2, f"expected 2 processes, got {accelerator.num_processes}"
    model = MedVLForPreTraining.from_pretrained(f"{fixture_dir}/model")
    model = accelerator.prepare(model)
    batch = torch.load(f"{fixture_dir}/global_batch.pt", weights_only=True)
    rows = batch["pixel_values"].shape[0] // accelerator.num_processes
    start = accelerator.process_index * rows
    micro_batches = [
        {key: value[index : index + micro_batch_size] for key, value in batch.items()}
        for index in range(start, start + rows, micro_batch_size)
    ]
    config = accelerator.unwrap_model(model).config
    weights = {"itc": config.itc_weight, "mlm": config.mlm_weight, "itm": config.itm_weight}
    label_aware = config.contrastive_targets == "label_aware"
    step = ExactAccumulationStep(accelerator, contrastive_loss, weights, label_aware_itc=label_aware)
    losses = step(model, micro_batches)
    if accelerator.is_main_process:
        gradients = {
            name: parameter.grad.detach().clone()
            for name, parameter in accelerator.unwrap_model(model).named_parameters()
            if parameter.grad is not None
        }
        torch.save(
            {"num_processes": accelerator.num_processes, "micro_batches": len(micro_batches), "loss": losses.loss,
             "terms": losses.terms, "gradients": gradients},
            output_file,
        )
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
