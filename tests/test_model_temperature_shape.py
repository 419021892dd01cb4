"""The learned temperature is a 1-element parameter (FSDP shards parameters along a first dimension and refuses 0-d
ones) and a 0-d tensor in checkpoints (CLIP's layout): outputs, saved files and every loading path see the shape they
always had."""

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from modeling_medvl import MedVLConfig, MedVLForPreTraining, MedVLForQuestionAnswering, MedVLModel


def tiny_model(value=3.25):
    torch.manual_seed(0)
    model = MedVLForPreTraining(MedVLConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        model.medvl.logit_scale.fill_(value)
    return model


def test_parameter_has_one_element_and_outputs_stay_0d():
    model = tiny_model()
    assert model.medvl.logit_scale.shape == (1,)
    size = model.config.vision_config.image_size
    output = model.medvl(input_ids=torch.randint(5, 100, (2, 8)), pixel_values=torch.randn(2, 3, size, size))
    assert output.logit_scale.shape == ()
    assert output.logit_scale.item() == torch.tensor(3.25).exp().item()


def test_checkpoint_holds_the_temperature_0d_and_reloads_it(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved["medvl.logit_scale"].shape == () and saved["medvl.logit_scale"].item() == 3.25
    for loaded in (MedVLForPreTraining.from_pretrained(tmp_path).medvl,
                   AutoModel.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.logit_scale.shape == (1,) and loaded.logit_scale.item() == 3.25
    MedVLModel.from_pretrained(tmp_path).save_pretrained(tmp_path / "base")
    assert load_file(tmp_path / "base" / "model.safetensors")["logit_scale"].shape == ()
    # A head from the base model's checkpoint, whose keys lack the head's `medvl.` prefix.
    for head in (MedVLForPreTraining, MedVLForQuestionAnswering):
        assert head.from_pretrained(tmp_path / "base").medvl.logit_scale.tolist() == [3.25]


def test_one_element_checkpoint_loads_too(tmp_path):
    # Whatever wrote it: the loading reshape accepts either shape.
    tiny_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["medvl.logit_scale"] = torch.tensor([2.5])
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert MedVLForPreTraining.from_pretrained(tmp_path).medvl.logit_scale.tolist() == [2.5]


def test_torch_load_state_dict_accepts_a_0d_temperature(tmp_path):
    model = tiny_model()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    weights["medvl.logit_scale"] = torch.tensor(1.5)
    model.load_state_dict(weights)
    assert model.medvl.logit_scale.shape == (1,) and model.medvl.logit_scale.item() == 1.5
