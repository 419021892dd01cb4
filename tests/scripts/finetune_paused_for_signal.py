"""Run train/finetune.py (classification) and hold every rank at the end of step PAUSE_AT, before the preemption check,
until the file GATE/go exists, once the rank has written its pid to GATE/paused-<rank>: a test then signals the
process as a scheduler's signal would land during that step.

Usage: finetune_paused_for_signal.py PAUSE_AT GATE [finetune.py arguments...]
"""

import os
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from train import finetune
from train.user_errors import run_main


class PauseAt(TrainerCallback):
    def __init__(self, step: int, gate: Path):
        self.step, self.gate = step, gate

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            marker = self.gate / f"paused-{os.environ.get('RANK', '0')}"
            marker.with_suffix(".tmp").write_text(str(os.getpid()))
            marker.with_suffix(".tmp").rename(marker)  # whole: the test reads the pid as soon as the file exists
            while not (self.gate / "go").exists():
                time.sleep(0.05)
        return control


if __name__ == "__main__":
    pause = PauseAt(int(sys.argv[1]), Path(sys.argv[2]))
    shared = finetune.training_callbacks
    # The task's extra callbacks come first, so the pause ends before the preemption callback looks for a signal.
    finetune.training_callbacks = lambda args, base_path, extra=(): shared(args, base_path, (*extra, pause))
    run_main(finetune.main, sys.argv[3:])
