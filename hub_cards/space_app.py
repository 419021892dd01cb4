"""MedVL Spaces demo: upload a chest radiograph (PNG, JPEG or DICOM) and see zero-shot finding scores, the
fine-tuned head's probabilities, a report, an answer to a question and where the fusion layers attend.

Runs from the exported model folder alone (its remote code), offline, on CPU by default:

    python space/app.py [--model FOLDER_OR_REPO] [--device cuda] [--port 7860]

The model defaults to the folder above this file, or the `MEDVL_MODEL` variable (a Hub repository on a Space). The
root model gives the zero-shot scores and the heatmap; task models in subfolders (the root config's
`medvl_task_models`: report_generation/, classification/, vqa/) give the report, the fine-tuned head's probabilities
and the answer, each with its own processor. Research demo only: not a medical device.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
for _name in ("NO_PROXY", "no_proxy"):  # gradio checks its own loopback URL: never through a proxy
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.dynamic_module_utils import get_class_from_dynamic_module  # noqa: E402

DISCLAIMER = ("**Research demo — not a medical device.** Outputs can be wrong and must never be used for "
              "diagnosis, triage or any decision about a patient.")
FINDINGS = ["no acute cardiopulmonary process", "cardiomegaly", "left pleural effusion", "right pleural effusion",
            "left pneumothorax", "right pneumothorax", "consolidation", "pulmonary edema"]
MIN_SIDE = 16
HEADS = {"zero_shot": "AutoModel", "classifier": "AutoModelForImageClassification",
         "reporter": "AutoModelForImageTextToText", "answerer": "AutoModelForVisualQuestionAnswering"}
TASK_ROLES = {"classification": "classifier", "report_generation": "reporter", "vqa": "answerer"}


class DemoError(ValueError):
    """A problem with the user's input, shown in the page."""


class Demo:
    def __init__(self, location: str, device: str = "cpu"):
        self.location, self.device = location, device
        self.models, self.processors = {}, {}
        config = self.add_models(HEADS)
        self.read_image = get_class_from_dynamic_module("image_io_medvl.read_medical_image", location)
        for task, subfolder in (getattr(config, "medvl_task_models", None) or {}).items():
            if task in TASK_ROLES:  # a task model in its subfolder takes the role over from the root
                role = TASK_ROLES[task]
                self.add_models({role: HEADS[role]}, subfolder)

    def add_models(self, roles: dict, subfolder=None):
        """Load the models of `roles` ({role: Auto class}) that the (sub)folder's auto_map holds, with its processor."""
        where = {"subfolder": subfolder} if subfolder else {}
        config = transformers.AutoConfig.from_pretrained(self.location, trust_remote_code=True, **where)
        processor = transformers.AutoProcessor.from_pretrained(self.location, trust_remote_code=True, **where)
        for role, auto_class in roles.items():
            if auto_class in config.auto_map and (hasattr(processor, "tokenizer") or role == "classifier"):
                # Eager attention: the heatmap reads the fusion layers' attention weights.
                model = getattr(transformers, auto_class).from_pretrained(
                    self.location, trust_remote_code=True, attn_implementation="eager", **where)
                self.models[role], self.processors[role] = model.to(self.device).eval(), processor
        return config

    def load(self, path) -> Image.Image:
        if not path:
            raise DemoError("Upload a chest X-ray first (PNG, JPEG or DICOM).")
        try:
            image = self.read_image(str(path))
        except ValueError as error:  # MedicalImageError: names the file and the reason
            raise DemoError(f"Could not read the image: {error}") from None
        if min(image.size) < MIN_SIDE:
            raise DemoError(f"The image is {image.size[0]}×{image.size[1]} pixels: too small to be a radiograph "
                            f"(at least {MIN_SIDE}×{MIN_SIDE}).")
        return image

    def pixels(self, image, role):
        processor = self.processors[role]
        image_processor = getattr(processor, "image_processor", processor)
        return image_processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)

    def text(self, texts, role):
        encoded = self.processors[role](text=texts, return_tensors="pt")
        return {key: value.to(self.device) for key, value in encoded.items() if key in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def zero_shot(self, image, findings):
        logits = self.models["zero_shot"](pixel_values=self.pixels(image, "zero_shot"),
                                          **self.text(findings, "zero_shot")).logits_per_image[0]
        return dict(zip(findings, logits.softmax(dim=-1).tolist()))

    @torch.no_grad()
    def head(self, image):
        model = self.models["classifier"]
        logits = model(pixel_values=self.pixels(image, "classifier")).logits[0]
        single = model.config.problem_type == "single_label_classification"
        scores = logits.softmax(dim=-1) if single else logits.sigmoid()
        return {model.config.id2label[i]: score for i, score in enumerate(scores.tolist())}

    @torch.no_grad()
    def report(self, image, ranked):
        if "reporter" not in self.models:
            top = ", ".join(f"{name} ({score:.0%})" for name, score in ranked[:3])
            return f"This model has no report generator. Leading zero-shot findings: {top}." if ranked else \
                "This model has no report generator."
        generated = self.models["reporter"].generate(pixel_values=self.pixels(image, "reporter"), max_new_tokens=64)
        text = self.processors["reporter"].tokenizer.decode(generated[0], skip_special_tokens=True).strip()
        return text or "(empty report)"

    @torch.no_grad()
    def answer(self, image, question):
        if not question.strip():
            return ""
        if "answerer" not in self.models:
            return "This model has no question-answering head."
        model = self.models["answerer"]
        logits = model(pixel_values=self.pixels(image, "answerer"), **self.text([question], "answerer")).logits[0]
        return str(model.config.id2label[int(logits.argmax())])

    @torch.no_grad()
    def heatmap(self, image, phrase):
        """The image tinted where the fusion layers' cross-attention from `phrase`'s tokens lands."""
        model = self.models.get("zero_shot")
        layers = [m for name, m in model.named_modules() if name.endswith("cross_attn")] if model else []
        if not layers:
            return None, "no heatmap: this model has no cross-attention fusion layers"
        captured = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out[1])) for layer in layers]
        try:
            model(pixel_values=self.pixels(image, "zero_shot"), compute_fusion=True, **self.text([phrase], "zero_shot"))
        finally:
            for hook in hooks:
                hook.remove()
        if not captured or captured[0] is None:
            return None, "no heatmap: the attention implementation returned no weights"
        weights = torch.stack([w[0].float().mean(dim=0).mean(dim=0) for w in captured]).mean(dim=0)
        side = int(weights.numel() ** 0.5)
        grid = weights[-side * side:].reshape(side, side).cpu().numpy()
        grid = (grid - grid.min()) / (np.ptp(grid) or 1.0)
        base = np.asarray(to_display(image).convert("RGB").resize((256, 256)), dtype=np.float32)
        heat = np.asarray(Image.fromarray(np.uint8(grid * 255)).resize((256, 256), Image.BILINEAR), np.float32) / 255
        tint = np.stack([heat * 255, np.zeros_like(heat), (1 - heat) * 96], axis=-1)
        return Image.fromarray(np.uint8(0.6 * base + 0.4 * tint)), f"heatmap for “{phrase}”"

    def analyse(self, path, findings_text, phrase, question):
        """Every output of the page; errors become a message in the status line."""
        empty = ("", None, None, "", "", None)
        try:
            image = self.load(path)
            findings = [f.strip() for f in (findings_text or "").split(",") if f.strip()] or FINDINGS
            scores = self.zero_shot(image, findings) if "zero_shot" in self.models else None
            ranked = sorted(scores.items(), key=lambda item: -item[1]) if scores else []
            head = self.head(image) if "classifier" in self.models else None
            report = self.report(image, ranked)
            answer = self.answer(image, question or "")
            target = (phrase or "").strip() or (ranked[0][0] if ranked else "")
            heat, note = self.heatmap(image, target) if target else (None, "no heatmap")
        except DemoError as error:
            return (f"⚠️ {error}",) + empty[1:]
        except Exception as error:  # never a stack trace in the page
            return (f"⚠️ The model could not analyse this image ({type(error).__name__}: {error}).",) + empty[1:]
        status = f"Analysed a {image.size[0]}×{image.size[1]} image; {note}."
        return status, scores, head, report, answer, heat


def to_display(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB"):
        return image
    values = np.asarray(image, dtype=np.float32)
    values = (values - values.min()) / (np.ptp(values) or 1.0)
    return Image.fromarray(np.uint8(values * 255))


def build_interface(demo: Demo):
    """The page (a gradio Blocks). gradio is imported here: the Demo class alone (report pages, scripts) runs
    without it."""
    import gradio as gr

    with gr.Blocks(title="MedVL demo") as page:
        gr.Markdown("# MedVL chest X-ray demo")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="upload")
                findings = gr.Textbox(label="Findings to score (comma-separated)", value=", ".join(FINDINGS))
                phrase = gr.Textbox(label="Heatmap for (a word or finding; empty: the top finding)")
                question = gr.Textbox(label="Question about the image (optional)")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                zero_shot = gr.Label(label="Zero-shot findings (softmax over the prompts)", elem_id="zero-shot")
                head = gr.Label(label="Fine-tuned head (probabilities)", elem_id="head",
                                visible="classifier" in demo.models)
                report = gr.Textbox(label="Report", elem_id="report", lines=4)
                answer = gr.Textbox(label="Answer", elem_id="answer")
                heatmap = gr.Image(label="Fusion attention", elem_id="heatmap", type="pil")
        button.click(demo.analyse, [upload, findings, phrase, question],
                     [status, zero_shot, head, report, answer, heatmap])
    return page


def main(argv=None):
    parser = argparse.ArgumentParser(description="MedVL Spaces demo (research only, not a medical device)")
    default = os.environ.get("MEDVL_MODEL") or str(Path(__file__).resolve().parent.parent)
    parser.add_argument("--model", default=default, help="exported model folder or Hub repository")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    args = parser.parse_args(argv)
    build_interface(Demo(args.model, args.device)).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
