"""A stand-in training process: write this rank's pid to GATE/ready-<rank>, wait (up to 2 minutes) for SIGTERM or
SIGUSR1, write the signal's name to GATE/got-<rank> and exit 0.

Usage (under accelerate launch): wait_for_signal.py GATE
"""

import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    gate, rank, received = Path(sys.argv[1]), os.environ.get("RANK", "0"), []
    for number in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(number, lambda signum, frame: received.append(signal.Signals(signum).name))
    (gate / f"ready-{rank}.tmp").write_text(str(os.getpid()))
    (gate / f"ready-{rank}.tmp").rename(gate / f"ready-{rank}")
    deadline = time.monotonic() + 120
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    (gate / f"got-{rank}").write_text(",".join(received))
