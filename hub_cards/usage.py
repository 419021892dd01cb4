"""The card's usage snippet. Its first two statements name the repository and an image (`REPO = ...`,
`IMAGE = ...`), so that a test can point them at an exported folder and a local image and run the rest as is.
Task models kept in subfolders (`report_generation/`, `classification/`, `vqa/`) load with `subfolder=...`."""

ZERO_SHOT = '''
model = AutoModel.from_pretrained(REPO, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(REPO, trust_remote_code=True)
findings = {findings!r}
with torch.no_grad():
    outputs = model(**processor(text=findings, padding=True, return_tensors="pt"),
                    **processor(images=IMAGE, return_tensors="pt"))  # paths may be PNG, JPEG or DICOM
scores = outputs.logits_per_image.softmax(dim=-1)[0]
print(dict(zip(findings, scores.tolist())))

# The same through the pipeline (PIL images; the prompts are used as given):
classifier = pipeline("zero-shot-image-classification", model=REPO, trust_remote_code=True)
print(classifier(Image.open(IMAGE), candidate_labels=findings, hypothesis_template="{{}}"))
'''

CLASSIFIER = '''
classifier = AutoModelForImageClassification.from_pretrained(REPO, {where}trust_remote_code=True).eval()
image_processor = AutoImageProcessor.from_pretrained(REPO, {where}trust_remote_code=True)
{adapter}with torch.no_grad():
    logits = classifier(**image_processor(IMAGE, return_tensors="pt")).logits[0]
probabilities = logits.{activation}
print({{classifier.config.id2label[i]: round(p, 4) for i, p in enumerate(probabilities.tolist())}})
'''

ADAPTER = '''# This folder keeps the fine-tuned LoRA adapter apart from the base weights: apply it (needs `peft`).
from peft import PeftModel
classifier = PeftModel.from_pretrained(classifier, REPO, subfolder="adapter").eval()
'''

REPORT = '''
# The report generator in the `{subfolder}/` subfolder: greedy decoding from the image.
reporter = AutoModelForImageTextToText.from_pretrained(REPO, subfolder="{subfolder}", trust_remote_code=True).eval()
report_processor = AutoProcessor.from_pretrained(REPO, subfolder="{subfolder}", trust_remote_code=True)
with torch.no_grad():
    report_ids = reporter.generate(**report_processor(images=IMAGE, return_tensors="pt"), max_new_tokens=64)
print(report_processor.tokenizer.decode(report_ids[0], skip_special_tokens=True))
'''

VQA = '''
# The question-answering model in the `{subfolder}/` subfolder: one answer from its answer vocabulary.
answerer = AutoModelForVisualQuestionAnswering.from_pretrained(REPO, subfolder="{subfolder}", trust_remote_code=True)
vqa_processor = AutoProcessor.from_pretrained(REPO, subfolder="{subfolder}", trust_remote_code=True)
question = "is there a pleural effusion?"
with torch.no_grad():
    logits = answerer.eval()(**vqa_processor(text=[question], return_tensors="pt"),
                             **vqa_processor(images=IMAGE, return_tensors="pt")).logits[0]
print(question, answerer.config.id2label[int(logits.argmax())])
'''

DEFAULT_FINDINGS = ["left pleural effusion", "right pleural effusion", "cardiomegaly",
                    "no acute cardiopulmonary process"]


def classifier_snippet(multi_label: bool, adapter: bool = False, subfolder=None) -> str:
    activation = "sigmoid()  # multi-label: one probability per finding" if multi_label else "softmax(dim=-1)"
    where = f'subfolder="{subfolder}", ' if subfolder else ""
    return CLASSIFIER.format(adapter=ADAPTER if adapter else "", activation=activation, where=where).rstrip()


def task_snippet(task: str, subfolder: str, multi_label: bool = True) -> tuple:
    """(transformers names it imports, code) for a task model kept in `subfolder`."""
    if task == "classification":
        return ["AutoImageProcessor", "AutoModelForImageClassification"], classifier_snippet(multi_label,
                                                                                              subfolder=subfolder)
    if task == "report_generation":
        return ["AutoModelForImageTextToText", "AutoProcessor"], REPORT.format(subfolder=subfolder).rstrip()
    return ["AutoModelForVisualQuestionAnswering", "AutoProcessor"], VQA.format(subfolder=subfolder).rstrip()


def usage_snippet(repo_id: str, zero_shot: bool, classifier: bool, multi_label: bool = True, adapter: bool = False,
                  findings=None, tasks=()) -> str:
    """`tasks`: [{task, subfolder, multi_label}] of the task models kept in subfolders."""
    imports = ["import torch", "from PIL import Image"]
    names = set()
    if zero_shot:
        names |= {"AutoModel", "AutoProcessor", "pipeline"}
    if classifier:
        names |= {"AutoImageProcessor", "AutoModelForImageClassification"}
    task_parts = []
    for facts in tasks:
        task_names, code = task_snippet(facts["task"], facts["subfolder"], facts.get("multi_label", True))
        names |= set(task_names)
        task_parts.append(code)
    imports.append(f"from transformers import {', '.join(sorted(names))}")
    parts = ["\n".join(imports), "", f'REPO = "{repo_id}"', 'IMAGE = "chest_xray.png"  # your radiograph']
    if zero_shot:
        parts.append(ZERO_SHOT.format(findings=list(findings or DEFAULT_FINDINGS)).rstrip())
    if classifier:
        parts.append(classifier_snippet(multi_label, adapter))
    return "\n".join(parts + task_parts).strip()


__all__ = ["DEFAULT_FINDINGS", "task_snippet", "usage_snippet"]
