"""`medvl export` and `medvl push --dry-run` on tiny runs: the folder reloads in a fresh offline process from its own
code (project packages blocked) with outputs equal to the checkpoint's, weights are sharded safetensors only, the
auto_map names only what the weights hold, LoRA adapters are merged or kept apart, and push refuses bad folders."""

import json
import shutil

import pytest
import torch
from export_testing import write_lora_classification_run, write_pretraining_run
from peft import PeftModel
from transformers import AutoModelForImageClassification

from hub_cards.push import folder_files
from hub_cards.reload_check import reload_check
from modeling_medvl import MedVLModel
from train.cli import main as medvl

INPUTS = {
    "pixel_values": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
    "input_ids": torch.tensor([[2, 40, 41, 42, 3], [2, 50, 51, 3, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
}


@pytest.fixture(scope="module")
def pretraining_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    checkpoint = write_pretraining_run(root)
    out = root / "hub" / "medvl-tiny"
    assert medvl(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--repo", "org/medvl-tiny",
                  "--max-shard-size", "1MB", "--no-check"]) == 0
    return checkpoint, out


def test_pretraining_export_reloads_in_a_fresh_process_with_equal_outputs(pretraining_export):
    checkpoint, out = pretraining_export
    results = reload_check(out, inputs=INPUTS)
    assert results["project_imported"] == []
    assert set(results["models"]) == {"AutoModel", "AutoModelForPreTraining", "AutoModelForZeroShotImageClassification"}
    assert all(name.startswith("transformers_modules.") for name in results["models"].values())
    assert results["processor"] == "MedVLProcessor"
    expected = MedVLModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        reference = expected(**INPUTS)
    for key, value in results["outputs"]["AutoModel"].items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=1e-6)
    scores = [item["score"] for item in results["pipeline"]]
    assert len(scores) == 2 and sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_exported_folder_layout(pretraining_export):
    _, out = pretraining_export
    names = {name for name, _ in folder_files(out)}
    config = json.loads((out / "config.json").read_text())
    # No classifier, VQA or report decoder weights in a pretraining checkpoint: those Auto classes are not offered.
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining",
                                       "AutoModelForZeroShotImageClassification"}
    shards = sorted(name for name in names if name.endswith(".safetensors"))
    assert len(shards) > 1 and "model.safetensors.index.json" in names  # 1MB shards of a ~5MB model
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert {"README.md", "processor_config.json", "tokenizer.json", "tokenizer_config.json", "space/app.py",
            "space/requirements.txt", "space/README.md", "modeling_medvl.py", "image_processing_medvl.py",
            "processing_medvl.py", "image_io_medvl.py"} <= names
    assert not [name for name in names if "/" in name and not name.startswith("space/")]  # remote code is flat


def test_push_dry_run_lists_every_file_and_refuses_bad_folders(pretraining_export, tmp_path, capsys):
    _, out = pretraining_export
    assert medvl(["push", str(out), "--repo", "org/medvl-tiny", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for name, size in folder_files(out):
        assert f"{size:,d}  {name}" in printed
    assert "Upload MedVL model from run p" in printed and "dry run: nothing uploaded" in printed

    pickled = tmp_path / "pickled"
    shutil.copytree(out, pickled)
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    with pytest.raises(SystemExit, match="pickled file refused: pytorch_model.bin"):
        medvl(["push", str(pickled), "--repo", "org/x", "--dry-run"])
    no_card = tmp_path / "no_card"
    shutil.copytree(out, no_card)
    (no_card / "README.md").write_text("---\nlicense: [unclosed\n---\nhello\n")
    with pytest.raises(SystemExit, match="README.md does not parse"):
        medvl(["push", str(no_card), "--repo", "org/x", "--dry-run"])
    with pytest.raises(SystemExit, match="expected 'org/name'"):
        medvl(["push", str(out), "--repo", "just-a-name", "--dry-run"])


def test_export_refuses_a_non_empty_folder_and_a_missing_checkpoint(pretraining_export, tmp_path):
    checkpoint, out = pretraining_export
    with pytest.raises(FileExistsError, match="not empty"):
        medvl(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--no-check"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        medvl(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"), "--no-check"])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return write_lora_classification_run(tmp_path_factory.mktemp("runs"))


def test_lora_merged_export_reloads_with_the_adapted_outputs(lora_run, tmp_path):
    checkpoint, eval_path, adapted = lora_run
    out = tmp_path / "merged"
    assert medvl(["export", "--checkpoint", str(checkpoint), "--eval", str(eval_path), "--out", str(out),
                  "--lora", "merge", "--no-check"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForImageClassification"}  # no text tower
    assert not (out / "adapter").exists()
    merged = AutoModelForImageClassification.from_pretrained(str(out), trust_remote_code=True).eval()
    # (in this process the installed classes answer; the card test runs the folder's own code in a fresh one)
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=INPUTS["pixel_values"]).logits,
                                   adapted(pixel_values=INPUTS["pixel_values"]).logits, rtol=0, atol=1e-5)


def test_lora_adapter_export_keeps_the_adapter_apart(lora_run, tmp_path):
    checkpoint, eval_path, adapted = lora_run
    out = tmp_path / "adapter"
    assert medvl(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--lora", "adapter",
                  "--repo", "org/medvl-lora", "--no-check"]) == 0
    assert sorted(p.name for p in (out / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "org/medvl-lora"
    base = AutoModelForImageClassification.from_pretrained(str(out), trust_remote_code=True)
    model = PeftModel.from_pretrained(base, str(out), subfolder="adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=INPUTS["pixel_values"]).logits,
                                   adapted(pixel_values=INPUTS["pixel_values"]).logits, rtol=0, atol=1e-5)
