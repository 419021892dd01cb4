"""The sizes of `medvl demo`: how many SynthCXR studies, which model, how many steps for each stage.

`quick` is what the tests run (about 8 minutes on 2 CPU cores); `tiny` is the default (about 10 minutes on 2 idle CPU
cores after the install); `small` and `base` are for a GPU (`--device cuda`): larger images, more studies, longer
training, the same stages.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DemoScale:
    studies: int  # written in the MIMIC-CXR-JPG layout (train / validate / test by the split file)
    vqa_studies: int  # written in the VQA-RAD layout (6 questions each), another seed
    split: str  # the shares of train / validate / test (`medvl data synth --split`): enough test studies to
    # tell each task from its baselines
    image_size: int  # the written images' side; the model's input side
    preset: str
    pretrain_steps: int
    pretrain_batch_size: int
    # Joint augmentation (crop, jitter, laterality-swapping flip) in pretraining: off for the CPU scales, where a
    # few epochs learn far more without it (160 steps: contrastive loss 2.42 against 3.65, zero-shot AUC 0.80
    # against 0.66); on for the longer GPU runs, as the pretraining recipes have it (not measured at those sizes).
    pretrain_augment: bool
    classification_epochs: float
    vqa_epochs: float
    report_steps: int
    max_new_tokens: int
    bootstrap_samples: int

    def as_dict(self) -> dict:
        return asdict(self)


SCALES = {
    "quick": DemoScale(studies=1000, vqa_studies=160, split="train=0.65,validate=0.05,test=0.3", image_size=64,
                       preset="tiny-convnext", pretrain_steps=80, pretrain_batch_size=64, pretrain_augment=False,
                       classification_epochs=2, vqa_epochs=3, report_steps=200, max_new_tokens=80,
                       bootstrap_samples=200),
    "tiny": DemoScale(studies=2000, vqa_studies=200, split="train=0.85,validate=0.05,test=0.1", image_size=64,
                      preset="tiny-convnext", pretrain_steps=160, pretrain_batch_size=64, pretrain_augment=False,
                      classification_epochs=2, vqa_epochs=3, report_steps=200, max_new_tokens=96,
                      bootstrap_samples=300),
    "small": DemoScale(studies=8000, vqa_studies=1000, split="train=0.85,validate=0.05,test=0.1", image_size=128,
                       preset="tiny-convnext", pretrain_steps=1500, pretrain_batch_size=128, pretrain_augment=True,
                       classification_epochs=5, vqa_epochs=8, report_steps=1000, max_new_tokens=128,
                       bootstrap_samples=1000),
    "base": DemoScale(studies=20000, vqa_studies=3000, split="train=0.9,validate=0.05,test=0.05", image_size=384,
                      preset="swin-base-384", pretrain_steps=5000, pretrain_batch_size=128, pretrain_augment=True,
                      classification_epochs=5, vqa_epochs=8, report_steps=3000, max_new_tokens=128,
                      bootstrap_samples=1000),
}


# The tasks fine-tuned with LoRA, and its settings: where it measured best (VQA keeps the pretrained fusion;
# classification and report generation gain from moving every weight at these sizes); the others in full.
LORA = {"vqa": "r=8"}


def choose_scale(name: str, quick: bool) -> tuple[str, DemoScale]:
    if quick and name not in ("tiny", "quick"):
        raise ValueError(f"--quick and --scale {name} ask for two sizes: give one")
    chosen = "quick" if quick else name
    if chosen not in SCALES:
        raise ValueError(f"--scale {name}: choose one of {', '.join(s for s in SCALES if s != 'quick')}")
    return chosen, SCALES[chosen]


__all__ = ["LORA", "SCALES", "DemoScale", "choose_scale"]
