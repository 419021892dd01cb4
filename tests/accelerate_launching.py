"""Launch a test script as 2 real gloo ranks with `accelerate launch` (CPU), on a free port."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ADDRESS_IN_USE = "address already in use"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(script, *arguments, timeout: int = 300, attempts: int = 3) -> subprocess.CompletedProcess:
    """Run `script` under `accelerate launch --multi_gpu --num_processes 2`, one thread per rank (two ranks share
    two cores). The port is free when chosen but may be taken before the ranks bind it (another xdist worker
    launching at the same moment): a launch that fails with "address already in use" is retried on a new port."""
    accelerate = Path(sys.executable).with_name("accelerate")
    for _ in range(attempts):
        command = [
            str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            str(script), *map(str, arguments),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        if result.returncode == 0 or ADDRESS_IN_USE not in (result.stdout + result.stderr).lower():
            return result
    return result


__all__ = ["free_port", "launch_two_processes"]
