"""The card's usage snippet. Its first two statements name the repository and an image (`REPO = ...`,
`IMAGE = ...`), so that a test can point them at an exported folder and a local image and run the rest as is."""

ZERO_SHOT = '''
model = AutoModel.from_pretrained(REPO, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(REPO, trust_remote_code=True)
findings = {findings!r}
with torch.no_grad():
    outputs = model(**processor(text=findings, return_tensors="pt"),
                    **processor(images=IMAGE, return_tensors="pt"))  # paths may be PNG, JPEG or DICOM
scores = outputs.logits_per_image.softmax(dim=-1)[0]
print(dict(zip(findings, scores.tolist())))

# The same through the pipeline (PIL images; the prompts are used as given):
classifier = pipeline("zero-shot-image-classification", model=REPO, trust_remote_code=True)
print(classifier(Image.open(IMAGE), candidate_labels=findings, hypothesis_template="{{}}"))
'''

CLASSIFIER = '''
classifier = AutoModelForImageClassification.from_pretrained(REPO, trust_remote_code=True).eval()
image_processor = AutoImageProcessor.from_pretrained(REPO, trust_remote_code=True)
{adapter}with torch.no_grad():
    logits = classifier(**image_processor(IMAGE, return_tensors="pt")).logits[0]
probabilities = logits.{activation}
print({{classifier.config.id2label[i]: round(p, 4) for i, p in enumerate(probabilities.tolist())}})
'''

ADAPTER = '''# This folder keeps the fine-tuned LoRA adapter apart from the base weights: apply it (needs `peft`).
from peft import PeftModel
classifier = PeftModel.from_pretrained(classifier, REPO, subfolder="adapter").eval()
'''

DEFAULT_FINDINGS = ["left pleural effusion", "right pleural effusion", "cardiomegaly",
                    "no acute cardiopulmonary process"]


def usage_snippet(repo_id: str, zero_shot: bool, classifier: bool, multi_label: bool = True, adapter: bool = False,
                  findings=None) -> str:
    imports = ["import torch", "from PIL import Image"]
    names = []
    if zero_shot:
        names += ["AutoModel", "AutoProcessor", "pipeline"]
    if classifier:
        names += ["AutoImageProcessor", "AutoModelForImageClassification"]
    imports.append(f"from transformers import {', '.join(sorted(names))}")
    parts = ["\n".join(imports), "", f'REPO = "{repo_id}"', 'IMAGE = "chest_xray.png"  # your radiograph']
    if zero_shot:
        parts.append(ZERO_SHOT.format(findings=list(findings or DEFAULT_FINDINGS)).rstrip())
    if classifier:
        activation = "sigmoid()  # multi-label: one probability per finding" if multi_label else "softmax(dim=-1)"
        parts.append(CLASSIFIER.format(adapter=ADAPTER if adapter else "", activation=activation).rstrip())
    return "\n".join(parts).strip()


__all__ = ["DEFAULT_FINDINGS", "usage_snippet"]
