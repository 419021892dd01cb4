"""Run a test script as 2 real gloo ranks with `accelerate launch` on the CPU."""

import os
import sys
from pathlib import Path

from .ports import run_on_a_free_port


def launch_two_processes(script, *arguments, timeout: int = 300):
    """Run `script` under `accelerate launch --multi_gpu --num_processes 2`, one thread per rank (two ranks share two
    cores), on a free port (another one if that port is taken before the ranks bind it)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return run_on_a_free_port(
        lambda port: [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                      "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                      str(script), *map(str, arguments)],
        timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
