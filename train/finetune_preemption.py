"""Preemption of a fine-tuning run (every task: the callback is in `train.finetune_run.training_callbacks`).

On SIGTERM or SIGUSR1 (what SLURM and Kubernetes send before they kill a job) the Trainer finishes the optimiser step
under way, every rank stops at that same step, the run writes checkpoint-<step> (after the end-of-epoch evaluation
when the step ends an epoch, so that the resumed run repeats the uninterrupted one), records `stop_reason:
"preempted:SIGTERM"` in train_summary.json and exits with status 0, skipping the final evaluation, which would outlast
the scheduler's grace period. `--resume_from_checkpoint latest` (or `auto`) in the requeued job continues the run.
"""

import json
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from train.logging_utils import get_logger

logger = get_logger("medvl.finetune")

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Ends a preempted run with exit status 0 once its checkpoint and summary are written, before the task's final
    evaluation and result files."""

    def __init__(self, stop_reason: str, checkpoint: str):
        super().__init__(0)
        self.stop_reason = stop_reason
        self.checkpoint = checkpoint


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PreemptionCallback(TrainerCallback):
    """Notes a preemption signal while training (acted on at the next step end), stops every rank at one step, saves,
    writes `summary_file` and raises `Preempted`; the previous signal handlers are back when training ends."""

    def __init__(self, summary_file: str):
        self.summary_file = summary_file
        self.received = 0  # the signal's number, set by the handler
        self.stop_reason = None
        self.saved_step = None
        self.previous_handlers = {}
        self.started = None

    def _note(self, signum, frame):
        self.received = signum

    def _agreed_signal(self, args) -> int:
        """The signal any rank received (the largest number), the same on every rank, so all stop at one step."""
        if not _distributed():
            return self.received
        flag = torch.tensor([self.received], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        for number in PREEMPTION_SIGNALS:
            try:
                self.previous_handlers[number] = signal.signal(number, self._note)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def on_step_end(self, args, state, control, **kwargs):
        received = self._agreed_signal(args)
        # At the last step the run ends anyway, with its final evaluation.
        if received and self.stop_reason is None and state.global_step < state.max_steps:
            self.stop_reason = f"preempted:{signal.Signals(received).name}"
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                logger.warning(f"step {state.global_step}: {signal.Signals(received).name} received: saving "
                               f"checkpoint-{state.global_step} and stopping (continue with --resume_from_checkpoint "
                               "latest)")
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stop_reason is None:
            return control
        if not float(state.epoch).is_integer():
            # Stopped mid-epoch: the uninterrupted run has no end-of-epoch evaluation here.
            control.should_evaluate = False
        # An evaluation due at the epoch's end belongs in the checkpoint the run resumes from; else it is written.
        control.should_save = control.should_evaluate or self.saved_step != state.global_step
        return control

    def on_save(self, args, state, control, **kwargs):
        self.saved_step = state.global_step
        if self.stop_reason is not None and args.save_total_limit == 1:
            # Trainer's end of run would keep the best checkpoint alone, and the run resumes from this one.
            args.save_total_limit = 2
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)
        self.previous_handlers = {}
        if self.stop_reason is None:
            return control
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero:
            summary = {
                "stop_reason": self.stop_reason,
                "global_step": state.global_step,
                "max_steps": state.max_steps,
                "epochs": state.epoch,
                "checkpoint": str(checkpoint),
                "best_metric": state.best_metric,
                "best_checkpoint": state.best_model_checkpoint,
                "training_s": time.time() - self.started,
            }
            (Path(args.output_dir) / self.summary_file).write_text(json.dumps(summary, indent=2))
            logger.warning(f"stopped at step {state.global_step} of {state.max_steps} ({self.stop_reason}); "
                           f"{checkpoint} is complete: continue with --resume_from_checkpoint latest")
        if _distributed():
            dist.barrier()  # no rank exits before the checkpoint and the summary are written
        raise Preempted(self.stop_reason, str(checkpoint))


__all__ = ["PREEMPTION_SIGNALS", "Preempted", "PreemptionCallback"]
