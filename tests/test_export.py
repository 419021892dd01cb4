"""`medvl export` and `medvl push --dry-run` on tiny runs: the folder reloads in a fresh offline process from its own
code (project packages blocked) with outputs equal to the checkpoint's, weights are sharded safetensors only, the
auto_map names only what the weights hold, LoRA adapters are merged or kept apart, and push refuses bad folders.
Task models (`--task-checkpoint`: a report generator, a LoRA classifier merged, a VQA model) go into subfolders and
reload from there (`subfolder=`) with outputs equal to their checkpoints'."""

import json
import shutil

import pytest
import torch
from export_testing import (report_generation_eval, write_lora_classification_run, write_pretraining_run,
                            write_report_generation_run, write_vqa_run)
from peft import PeftModel
from transformers import AutoModelForImageClassification

from hub_cards.card import card_problems
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
def lora_run(tmp_path_factory):
    return write_lora_classification_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def pretraining_export(tmp_path_factory, lora_run):
    """A pretraining checkpoint at the root, with report_generation/, classification/ (the LoRA run, merged) and
    vqa/ task models; returns (checkpoint, folder, {task: the task model as trained})."""
    root = tmp_path_factory.mktemp("runs")
    checkpoint = write_pretraining_run(root)
    (report, report_eval, reporter), (vqa, answerer) = write_report_generation_run(root), write_vqa_run(root)
    out = root / "hub" / "medvl-tiny"
    assert medvl(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--repo", "org/medvl-tiny",
                  "--max-shard-size", "1MB", "--no-check", "--task-checkpoint", f"report_generation={report}",
                  "--task-eval", f"report_generation={report_eval}", "--task-checkpoint", f"vqa={vqa}",
                  "--task-checkpoint", f"classification={lora_run[0]}"]) == 0
    return checkpoint, out, {"report_generation": reporter, "classification": lora_run[2], "vqa": answerer}


@pytest.mark.slow
def test_pretraining_export_reloads_in_a_fresh_process_with_equal_outputs(pretraining_export):
    checkpoint, out, task_models = pretraining_export
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

    # Each task model, loaded with subfolder= from the folder's own code, equals its checkpoint.
    tasks = results["task_models"]
    assert {task: set(found["models"]) for task, found in tasks.items()} == {
        "report_generation": {"AutoModelForImageTextToText"}, "classification": {"AutoModelForImageClassification"},
        "vqa": {"AutoModelForVisualQuestionAnswering"}}
    assert all(name.startswith("transformers_modules.") for task in tasks.values() for name in task["models"].values())
    with torch.no_grad():
        generated = task_models["report_generation"].generate(pixel_values=INPUTS["pixel_values"], max_new_tokens=8,
                                                              do_sample=False)
        logits = {"classification": task_models["classification"](pixel_values=INPUTS["pixel_values"]).logits,
                  "vqa": task_models["vqa"](**INPUTS).logits}
    torch.testing.assert_close(tasks["report_generation"]["outputs"]["AutoModelForImageTextToText"]["sequences"],
                               generated, rtol=0, atol=0)
    assert generated.shape[1] > 2  # it wrote tokens
    torch.testing.assert_close(tasks["classification"]["outputs"]["AutoModelForImageClassification"]["logits"],
                               logits["classification"], rtol=0, atol=1e-5)  # LoRA merged
    torch.testing.assert_close(tasks["vqa"]["outputs"]["AutoModelForVisualQuestionAnswering"]["logits"],
                               logits["vqa"], rtol=0, atol=1e-6)


def test_exported_folder_layout(pretraining_export):
    _, out, _ = pretraining_export
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
    tasks = {"report_generation": "AutoModelForImageTextToText", "classification": "AutoModelForImageClassification",
             "vqa": "AutoModelForVisualQuestionAnswering"}
    assert config["medvl_task_models"] == {task: task for task in tasks}
    assert {name.split("/")[0] for name in names if "/" in name} == {"space", *tasks}  # remote code is flat
    for task, auto_class in tasks.items():  # each subfolder: a complete MedVL folder of its one task
        sub = json.loads((out / task / "config.json").read_text())
        assert set(sub["auto_map"]) == {"AutoConfig", auto_class}
        assert {f"{task}/modeling_medvl.py", f"{task}/processor_config.json"} <= names
        assert any(name.startswith(f"{task}/") and name.endswith(".safetensors") for name in names)
        assert (out / task / "generation_medvl.py").read_bytes() == (out / "generation_medvl.py").read_bytes()
    card = (out / "README.md").read_text()
    assert "## Task models in this folder" in card and 'subfolder="report_generation"' in card
    assert "| cider | 0.4120 |" in card and "Evaluation of `vqa/` (vqa)" in card
    assert card_problems(out, None, {"report_generation": report_generation_eval(), "vqa": None,
                                     "classification": None}) == []
    assert card_problems(out, None, {"report_generation": None})  # the report model's metrics are in the index


def test_task_checkpoint_arguments_are_checked(tmp_path):
    for flags, message in ((["--task-checkpoint", "captioning=x"], "expected TASK=PATH"),
                           (["--task-eval", "vqa=e.json", "--task-checkpoint", "vqa=x"], "e.json: no such file"),
                           (["--task-eval", f"vqa={tmp_path}"], "no --task-checkpoint for that task")):
        with pytest.raises(SystemExit, match=message):
            medvl(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"), *flags])


@pytest.mark.slow
def test_push_dry_run_lists_every_file_and_refuses_bad_folders(pretraining_export, tmp_path, capsys):
    _, out, _ = pretraining_export
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


def test_export_refuses_a_non_empty_folder_and_a_missing_checkpoint(pretraining_export, tmp_path, capsys):
    checkpoint, out, _ = pretraining_export
    for arguments, message in ((["--checkpoint", str(checkpoint), "--out", str(out)], "exists and is not empty"),
                               (["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o")], "no config.json")):
        with pytest.raises(SystemExit) as stopped:
            medvl(["export", *arguments, "--no-check"])
        assert stopped.value.code == 2 and message in str(stopped.value)
        assert capsys.readouterr().err.splitlines() == [f"error: {stopped.value}"]


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


# The pip name of each module the exported code may import, where the two differ.
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow"}


def test_space_requirements_cover_every_import_of_the_exported_code(pretraining_export):
    """A Space installs requirements.txt and nothing else: every third-party module of the folder's code and of
    app.py must be in it (the processor's OpenCV CLAHE once was not)."""
    import sys

    from transformers.dynamic_module_utils import get_imports

    _, out, _ = pretraining_export
    code = [*out.glob("*_medvl.py"), out / "space" / "app.py"]
    third_party = {name for path in code for name in get_imports(str(path))} - set(sys.stdlib_module_names)
    required = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for line in (out / "space" / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert "cv2" in third_party  # the check sees the imports it is about
    missing = sorted(PIP_NAMES.get(name, name) for name in third_party if PIP_NAMES.get(name, name) not in required)
    assert not missing, f"space/requirements.txt lacks {missing}"
