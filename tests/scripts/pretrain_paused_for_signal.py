"""Run train/pretrain.py and hold every rank after step PAUSE_AT (its checkpoint, if one is due, written) until the file
GATE/go exists, once the rank has written its pid to GATE/paused-<rank>: a test then signals the processes between two
known steps, as a scheduler's signal would land mid-run.

Usage (under accelerate launch): pretrain_paused_for_signal.py PAUSE_AT GATE [pretrain.py arguments...]
"""

import os
import sys
import time
from pathlib import Path

from train.pretrain import main


def pause_after(pause_step, gate: Path):
    def after_step(step):
        if step == pause_step:
            marker = gate / f"paused-{os.environ.get('RANK', '0')}"
            marker.with_suffix(".tmp").write_text(str(os.getpid()))
            marker.with_suffix(".tmp").rename(marker)  # whole: the test reads the pid as soon as the file exists
            while not (gate / "go").exists():
                time.sleep(0.05)

    return after_step


if __name__ == "__main__":
    main(sys.argv[3:], after_step=pause_after(int(sys.argv[1]), Path(sys.argv[2])))
