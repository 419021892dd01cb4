"""AdamW parameter groups, the warmup + cosine learning-rate schedule of the papers' recipe, and its check."""

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

TEMPERATURE_PARAMETER_NAMES = ("logit_scale",)


def _norm_parameter_names(model: nn.Module) -> set:
    """Names of parameters owned by normalisation layers (LayerNorm, RMSNorm, BatchNorm, GroupNorm...)."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) or (
            "norm" in type(module).__name__.lower()
        )
        if is_norm:
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def is_decay_exempt(name: str, parameter: torch.Tensor, norm_names: set) -> bool:
    """Biases, norm parameters, the temperature and any other 0/1-d gain are not weight-decayed."""
    last = name.rsplit(".", 1)[-1]
    return (
        parameter.ndim < 2
        or last == "bias"
        or name in norm_names
        or any(temperature in last for temperature in TEMPERATURE_PARAMETER_NAMES)
    )


def parameter_groups(model: nn.Module, weight_decay: float) -> list:
    """Two AdamW groups: decayed weights and exempt parameters (each group keeps its names for logging)."""
    norm_names = _norm_parameter_names(model)
    decay, exempt = {}, {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (exempt if is_decay_exempt(name, parameter, norm_names) else decay)[name] = parameter
    return [
        {"params": list(decay.values()), "weight_decay": weight_decay, "param_names": list(decay)},
        {"params": list(exempt.values()), "weight_decay": 0.0, "param_names": list(exempt)},
    ]


def build_optimizer(model: nn.Module, learning_rate, weight_decay, betas=(0.9, 0.98), eps=1e-6):
    groups = parameter_groups(model, weight_decay)
    if not groups[0]["params"] and not groups[1]["params"]:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)


def build_scheduler(optimizer, warmup_steps: int, max_steps: int):
    """Linear warmup from 0 to the peak learning rate, then cosine decay to 0 at `max_steps`."""
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)


def schedule_warnings(max_steps: int, warmup_steps: int, eval_steps: int, save_steps: int, evaluating: bool,
                      early_stopping_patience: int | None) -> list:
    """What of the run's schedule falls outside its `max_steps` (one message per problem, with the numbers).

    A recipe written for one data set can be run on another with a different number of steps per epoch:
    evaluation and saving that never fire, a warmup that never ends, or early stopping that can never stop
    are silent until the run is over."""
    messages = []
    if evaluating and eval_steps > max_steps:
        messages.append(f"eval_steps {eval_steps} > max_steps {max_steps}: the run of {max_steps} steps never "
                        "evaluates, so no best checkpoint and no early stopping")
    if save_steps > max_steps:
        messages.append(f"save_steps {save_steps} > max_steps {max_steps}: the run of {max_steps} steps saves "
                        "only its final checkpoint")
    if warmup_steps >= max_steps:
        messages.append(f"warmup of {warmup_steps} steps covers the whole run of {max_steps} steps: the learning "
                        "rate never decays")
    if evaluating and eval_steps and early_stopping_patience and early_stopping_patience * eval_steps > max_steps:
        messages.append(f"early_stopping_patience {early_stopping_patience} x eval_steps {eval_steps} = "
                        f"{early_stopping_patience * eval_steps} steps > max_steps {max_steps}: the run of "
                        f"{max_steps} steps can never stop early")
    return messages


__all__ = ["parameter_groups", "is_decay_exempt", "build_optimizer", "build_scheduler", "schedule_warnings"]
