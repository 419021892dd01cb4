"""Run train/pretrain.py and SIGKILL every rank right after step KILL_AT_STEP (no clean shutdown).

Usage (under accelerate launch): pretrain_killed_mid_run.py KILL_AT_STEP [pretrain.py arguments...]
"""

import os
import signal
import sys

from train.pretrain import main


def kill_after(kill_step):
    def after_step(step):
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return after_step


if __name__ == "__main__":
    main(sys.argv[2:], after_step=kill_after(int(sys.argv[1])))
