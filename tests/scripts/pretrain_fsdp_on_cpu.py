"""Run train/pretrain.py sharded by FSDP on CPU ranks, configured by an Accelerate FSDP config file.

Usage (under `accelerate launch --multi_gpu --num_processes 2`): pretrain_fsdp_on_cpu.py CONFIG_FILE [pretrain.py
arguments...]

accelerate will not run FSDP on the CPU: its launcher stops an FSDP config there ("There are currently no available
devices found"), and on CPU ranks its state is DDP (MULTI_CPU) whatever the environment says. torch's FSDP itself runs
on the CPU with gloo. So this script sets what `accelerate launch --config_file CONFIG_FILE` sets (the config's
`fsdp_*` keys as `FSDP_*` variables, ACCELERATE_USE_FSDP) and switches the accelerator's state to FSDP with the plugin
those variables describe; pretrain.py then runs unchanged, and its `accelerator.prepare` wraps the model in FSDP as it
does on GPUs.
"""

import os
import sys

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import train.pretrain as pretrain


def launch_environment(config_file) -> dict:
    """The variables `accelerate launch --config_file CONFIG_FILE` sets for an FSDP config, as CPU ranks can run it:
    torch's FSDP broadcasts rank 0's weights (sync_module_states) on GPUs only, so here every rank builds the same
    seeded model, or loads the same checkpoint, itself."""
    config = yaml.safe_load(open(config_file))
    assert config["distributed_type"] == "FSDP", config_file
    environment = {key.upper(): str(value).lower() if isinstance(value, bool) else str(value)
                   for key, value in config["fsdp_config"].items()}
    return {**environment, "ACCELERATE_USE_FSDP": "true", "FSDP_SYNC_MODULE_STATES": "false"}


class FSDPOnCPU(Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # CPU ranks: DDP (MULTI_CPU)
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables
        # Both shared states: AcceleratorState() copies PartialState's each time it is created.
        for state in (PartialState(), self.state):
            state.distributed_type = DistributedType.FSDP
            state.device = torch.device("cpu")  # FSDP's compute device: "cpu", where accelerate's CPU ranks say "cpu:0"


if __name__ == "__main__":
    os.environ.update(launch_environment(sys.argv[1]))
    pretrain.Accelerator = FSDPOnCPU
    pretrain.main(sys.argv[2:])
