"""Load an exported folder the way a Hub user would, in a fresh `python -I` process: another working directory,
`HF_HUB_OFFLINE=1`, and MedVL's own packages blocked from import, so that every class must come from the folder's
remote code. Every Auto class of its auto_map, `AutoProcessor` and (when held) the zero-shot pipeline are loaded
and run on the same inputs; their outputs come back for comparison with the checkpoint's. Task models kept in
subfolders (the root config's `medvl_task_models`) are loaded the same way with `subfolder=`, each with its own
processor; a report generator's greedy tokens (`generate`) come back with them."""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

OUTPUT_KEYS = ("logits", "logits_per_image", "image_embeds", "text_embeds")
FORWARD = ("AutoModel", "AutoModelForImageClassification", "AutoModelForVisualQuestionAnswering")
TASK_MODELS_KEY = "medvl_task_models"  # as hub_cards.export writes it (not imported: torch-only module)
PROJECT_PACKAGES = ("modeling_medvl", "processing", "train", "hub_cards")

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = set(sys.argv[4].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name}: the project's own package may not be used by an exported folder")

    sys.meta_path.insert(0, Block())
    import numpy as np, torch, transformers
    from PIL import Image
    torch.set_num_threads(1)
    folder, inputs_path, result_path = sys.argv[1:4]
    image = Image.fromarray((np.linspace(0, 255, 64 * 64).reshape(64, 64)).astype("uint8"))
    texts = ["left pleural effusion", "cardiomegaly"]
    given = torch.load(inputs_path, weights_only=True) if inputs_path else None

    def check(subfolder):
        where = {"subfolder": subfolder} if subfolder else {}
        config = json.load(open("/".join(filter(None, [folder, subfolder, "config.json"]))))
        processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True, **where)
        inputs = given
        if inputs is None:
            image_processor = getattr(processor, "image_processor", processor)
            inputs = dict(image_processor(images=[image] * len(texts), return_tensors="pt"))  # VQA pairs them
            if hasattr(processor, "tokenizer"):
                inputs.update(processor(text=texts, return_tensors="pt"))
        results = {"processor": type(processor).__name__, "models": {}, "outputs": {}}
        for auto_class in sorted(config["auto_map"]):
            if auto_class == "AutoConfig":
                continue
            model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True, **where).eval()
            results["models"][auto_class] = type(model).__module__ + "." + type(model).__name__
            accepted = {"pixel_values"} if "ImageClassification" in auto_class else set(inputs)
            with torch.no_grad():
                if auto_class in FORWARD:
                    output = model(**{key: value for key, value in inputs.items() if key in accepted})
                    results["outputs"][auto_class] = {key: output[key] for key in KEYS if output.get(key) is not None}
                elif auto_class == "AutoModelForImageTextToText":
                    generated = model.generate(pixel_values=inputs["pixel_values"], max_new_tokens=8, do_sample=False)
                    results["outputs"][auto_class] = {"sequences": generated}
        if "AutoModelForZeroShotImageClassification" in config["auto_map"] and not subfolder:
            classifier = transformers.pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
            results["pipeline"] = classifier(image, candidate_labels=texts, hypothesis_template="{}")
        return results, config

    results, config = check("")
    results["task_models"] = {task: check(sub)[0] for task, sub in config.get(TASKS_KEY, {}).items()}
    results["project_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    torch.save(results, result_path)
    """
)


def reload_check(folder, inputs: dict | None = None, timeout: float = 600) -> dict:
    """Run the fresh-process load of `folder`; returns {processor, models: {auto class: class}, outputs: {auto class:
    {key: tensor}}, pipeline: [...], task_models: {task: {processor, models, outputs}}} or raises RuntimeError with
    the subprocess's error. `inputs` (when given) go to every model, root and task models alike."""
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="medvl-reload-") as work:
        inputs_path = ""
        if inputs is not None:
            inputs_path = str(Path(work) / "inputs.pt")
            torch.save({key: value for key, value in inputs.items()}, inputs_path)
        result_path = str(Path(work) / "results.pt")
        script = f"KEYS = {OUTPUT_KEYS!r}\nFORWARD = {FORWARD!r}\nTASKS_KEY = {TASK_MODELS_KEY!r}\n" + SCRIPT
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(Path(work) / "hf"),
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("PYTHONPATH", None)
        completed = subprocess.run(
            [sys.executable, "-I", "-c", script, str(folder), inputs_path, result_path, ",".join(PROJECT_PACKAGES)],
            cwd=work, env=env, capture_output=True, text=True, timeout=timeout,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"reloading {folder} in a fresh process failed:\n{completed.stderr[-4000:]}")
        return torch.load(result_path, weights_only=False)


def reload_problems(folder) -> list:
    """[] when the folder reloads in a fresh process, else one line saying why not."""
    try:
        results = reload_check(folder)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return [str(error).strip().splitlines()[-1]]
    if results["project_imported"]:
        return [f"the exported code imported the project's packages: {results['project_imported']}"]
    return []


__all__ = ["OUTPUT_KEYS", "reload_check", "reload_problems"]
