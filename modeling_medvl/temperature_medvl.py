"""The learned temperature's two shapes: one element in the model, 0-d in checkpoints.

torch's FSDP (1 and 2) shards parameters along their first dimension and refuses 0-d ones, so `MedVLModel.logit_scale`
is held as a 1-element tensor. Checkpoints keep the 0-d tensor of CLIP's layout (transformers' and open_clip's
`logit_scale`), so that every checkpoint written before, and every converted CLIP-family one, loads unchanged, and a
saved folder reads the same for any other tool. The shapes meet at the two loading paths:

- `from_pretrained` / `save_pretrained`: a transformers weight conversion, registered for each model class that holds
  a temperature, reshapes on load and reverses on save;
- `nn.Module.load_state_dict`: a load pre-hook on the module that holds the temperature reshapes a 0-d value.
"""

import torch
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter

TEMPERATURE_NAME = "logit_scale"
TEMPERATURE_SHAPE = (1,)
CHECKPOINT_SHAPE = ()


class ReshapeTemperature(ConversionOps):
    """Reshape the one temperature tensor to `shape` (either shape is accepted: reshaping is idempotent)."""

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs) -> dict:
        (tensors,) = input_dict.values()
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(self.shape)}

    @property
    def reverse_op(self) -> ConversionOps:
        return ReshapeTemperature(CHECKPOINT_SHAPE if self.shape == TEMPERATURE_SHAPE else TEMPERATURE_SHAPE)


def register_temperature_conversion(class_name: str) -> None:
    """Make `from_pretrained` load a 0-d checkpoint temperature into the 1-element parameter, and `save_pretrained`
    write it back 0-d, for the model class `class_name` (called for each class that holds a temperature; as the
    loaded model's own class, the conversion also matches a checkpoint of the base model, keyed without its prefix)."""
    # A plain name (matched anywhere in a key): transformers versions differ in how they reverse regex anchors.
    converter = WeightConverter(TEMPERATURE_NAME, TEMPERATURE_NAME, operations=[ReshapeTemperature(TEMPERATURE_SHAPE)])
    # overwrite: remote code may import this module again under another package name.
    register_checkpoint_conversion_mapping(class_name, [converter], overwrite=True)


def reshape_temperature_on_load(module, state_dict, prefix, *args) -> None:
    """`nn.Module` load_state_dict pre-hook: a 0-d temperature (a checkpoint's, a CLIP conversion's) fits the
    1-element parameter."""
    key = prefix + TEMPERATURE_NAME
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(TEMPERATURE_SHAPE)


__all__ = ["TEMPERATURE_SHAPE", "register_temperature_conversion", "reshape_temperature_on_load"]
