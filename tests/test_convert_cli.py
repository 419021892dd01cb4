"""`medvl convert`: the written folder loads with AutoModel (trust_remote_code) in a fresh offline process and gives
the source model's embeddings; the source's tokenizer is kept; bad input is a one-line error."""

import os
import subprocess
import sys

import torch

from convert_fixtures import causal_batch, save_tiny_bert, save_tiny_clip
from train.cli import main

LOAD_AND_EMBED = """
import sys, torch
from transformers import AutoModel, AutoTokenizer
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert len(AutoTokenizer.from_pretrained(folder)) == model.config.text_config.vocab_size
# Converted with lock_vision_tower=true: LiT from the saved config.
assert not any(p.requires_grad for p in model.vision_model.parameters())
assert all(p.requires_grad for p in model.text_model.parameters())
inputs = torch.load(sys.argv[2])
with torch.no_grad():
    output = model(**inputs)
torch.save({"image_embeds": output.image_embeds, "text_embeds": output.text_embeds,
            "logits_per_image": output.logits_per_image}, sys.argv[3])
"""


def test_converted_clip_folder_round_trips_through_automodel_offline(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    assert main(["convert", "--from", "clip", "--src", str(tmp_path / "clip"), "--out", str(tmp_path / "medvl"),
                 "--fusion-type", "merged", "--model-overrides", "lock_vision_tower=true", "--quiet"]) == 0
    input_ids, attention_mask = causal_batch()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": torch.randn(2, 3, 32, 32)}
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    # A fresh process, outside the repository: the model comes from the folder's own code.
    subprocess.run([sys.executable, "-c", LOAD_AND_EMBED, str(tmp_path / "medvl"), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], check=True, env=env, cwd=tmp_path, timeout=300)
    ours = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        expected = clip(**inputs)
    for name, value in ours.items():
        assert (value - expected[name]).abs().max() < 1e-5, name


def test_towers_and_bad_input(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    # The tiny preset's vision tower, and a BERT folder to fill its text tower.
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64,
                            embed_dim=128, depth=3, num_heads=4, patch_size=8)
    save_file(vit.state_dict(), tmp_path / "vit.safetensors")
    save_tiny_bert(tmp_path / "bert")
    text = ["text_config.vocab_size=99", "text_config.hidden_size=32", "text_config.intermediate_size=64",
            "text_config.max_position_embeddings=40", "text_config.bos_token_id=2", "text_config.eos_token_id=3",
            "text_config.mask_token_id=4", "lock_vision_tower=true"]
    assert main(["convert", "--from", "towers", "--preset", "tiny", "--src", str(tmp_path / "vit.safetensors"),
                 "--text-model", str(tmp_path / "bert"), "--out", str(tmp_path / "medvl"),
                 "--model-overrides", *text]) == 0
    assert "with its tokenizer" in capsys.readouterr().out
    assert (tmp_path / "medvl" / "vocab.txt").is_file() or (tmp_path / "medvl" / "tokenizer.json").is_file()

    assert main(["convert", "--from", "clip", "--src", str(tmp_path / "bert"), "--out", str(tmp_path / "bad")]) == 2
    assert "error: Expected a transformers CLIPModel config" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
