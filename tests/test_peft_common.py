"""peft's own common tests (PeftCommonTester, from the source distribution of the installed peft version, fetched by
tests/fetch_transformers_tests.py) against MedVL with LoRA, IA3 and LoHa.

Every `_test_*` method of the installed PeftCommonTester runs once per adapter type, on a tiny MedVL saved to a
folder (the mixin loads its models with `from_pretrained(model_id)`): the question-answering head, whose forward
runs the vision tower, text tower, fusion layers and answer head, for training, saving, loading and merging; the
report generator for what goes through `generate()`. A method taking arguments this file does not supply fails,
naming them, rather than being left out."""

import contextlib
import copy
import importlib.util
import inspect
import sys

import pytest
import torch
from peft import IA3Config, LoHaConfig, LoraConfig
from peft.tuners.lora import model as lora_model

from fetch_transformers_tests import PEFT_PACKAGE_NAME, PEFT_UPSTREAM_DIR
from helpers import BOS, EOS, PAD, tiny_config
from modeling_medvl import MedVLForConditionalGeneration, MedVLForQuestionAnswering
from train.lora_presets import FUSION_TARGETS, VISION_TARGETS

if not (PEFT_UPSTREAM_DIR / PEFT_PACKAGE_NAME).is_dir():
    raise RuntimeError("peft's common tests are missing: run `python tests/fetch_transformers_tests.py` first "
                       "(the README's test command does).")
sys.path.insert(0, str(PEFT_UPSTREAM_DIR))
if importlib.util.find_spec("diffusers") is None:
    sys.path.append(str(PEFT_UPSTREAM_DIR / "stand_ins"))

from peft_tests import testing_common  # noqa: E402
from peft_tests.testing_common import PeftCommonTester  # noqa: E402

# The mixin wraps each model load in `hub_online_once(model_id)`, which limits Hub downloads of a model id to one by
# patching transformers' offline switch (a private name, which older peft releases patch under a name transformers 5
# no longer has). MedVL's models here are local folders, loaded offline: nothing to limit.
testing_common.hub_online_once = contextlib.nullcontext

VOCAB = 64
IMAGE_SIZE = 32

# The LoRA presets' vision (timm ViT), text and fusion targets (train/lora_presets.py) plus the answer head's two
# Linear layers, as a list of name suffixes: the mixin's layer-indexing test needs a list, not the presets' regex.
QA_TARGETS = [*VISION_TARGETS["vit"], *(name for name in FUSION_TARGETS if name != "image_projection"),
              "answer_head.1", "answer_head.4"]
QA_FEEDFORWARD = ["mlp.fc1", "mlp.fc2", "fc1", "fc2", "answer_head.1", "answer_head.4"]
# The report decoder's self- and cross-attention and feed-forward layers (and the vision tower's).
GENERATION_TARGETS = QA_TARGETS[:-2]
GENERATION_FEEDFORWARD = ["mlp.fc1", "mlp.fc2", "fc1", "fc2"]

# Adapters initialised away from the identity (as peft's own suites do), so that an adapter changes the outputs that
# the merge, unload and disable tests compare; rank 8, which the mixin's weighted-combination test expects.
ADAPTERS = {
    "lora": (LoraConfig, lambda targets, feedforward: {
        "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": targets, "init_lora_weights": False}),
    "ia3": (IA3Config, lambda targets, feedforward: {
        "target_modules": targets, "feedforward_modules": feedforward, "init_ia3_weights": False}),
    "loha": (LoHaConfig, lambda targets, feedforward: {
        "r": 8, "alpha": 16, "target_modules": targets, "init_weights": False}),
}

# Methods whose models must generate; every other method runs on the question-answering head.
GENERATION_METHODS = {
    "_test_generate",
    "_test_mixed_adapter_batches",  # compares generate()'s scores too
    "_test_generate_with_mixed_adapter_batches_and_beam_search",
    "_test_disable_adapter",  # compares generate()'s scores, or a bare forward's output as a tensor
}
# Methods run more than once, with these arguments (by variant name); the rest run once with none beyond the
# mixin's model_id, config_cls and config_kwargs.
VARIANTS = {
    "_test_add_adapter_no_autocast_adapter_dtype": {"bf16": {"dtype": torch.bfloat16}},
    "_test_training_gradient_checkpointing": {"reentrant": {"use_reentrant": True},
                                               "non_reentrant": {"use_reentrant": False}},
}
SKIPS = {
    "_test_generate_pos_args": "MedVL generates from an image: generate(input_ids) without pixel_values is refused "
                               "with a ValueError, where the mixin expects it to work or raise TypeError.",
    "_test_generate_half_prec": "It calls generate() with input_ids alone; MedVL's report decoder is conditioned on an "
                                "image (pixel_values are required).",
    "_test_passing_input_embeds_works": "MedVL's forward takes no inputs_embeds: images enter as pixel_values and "
                                        "text as input_ids.",
    "_test_lora_conversion": "It compares output.hidden_states; MedVL's task outputs (logits, loss, cache) carry no "
                             "per-layer hidden states.",
}
# (method, adapter) pairs a peft release's mixin cannot check.
ADAPTER_SKIPS = {}
if "model.prefix in name" not in inspect.getsource(PeftCommonTester._test_merge_layers_nan):
    ADAPTER_SKIPS["_test_merge_layers_nan", "loha"] = (
        "This peft release's NaN test poisons adapter weights found by LoRA, IA3, VeRA and FourierFT parameter names "
        "only: LoHa's stay finite, so the merge it expects to refuse succeeds.")
if not hasattr(lora_model, "_get_encoder"):  # the helper with which later peft releases tell the two apart
    SKIPS["_test_generate_with_mixed_adapter_batches_and_beam_search"] = (
        "This peft release takes the model returned by transformers 5's get_encoder() for an encoder even when it is "
        "the model itself (a decoder-only model), so every layer gets the batch's adapter names un-repeated for the "
        "beams: mixed adapter batches with beam search fail for any decoder-only model here.")


def _cases() -> list:
    """(method, variant) for each of the installed mixin's test methods; the helpers it calls itself (taking a built
    model) are left out."""
    cases = []
    for name, function in inspect.getmembers(PeftCommonTester, inspect.isfunction):
        parameters = list(inspect.signature(function).parameters)
        if name.startswith("_test_") and "model_id" in parameters and "model" not in parameters:
            for variant in VARIANTS.get(name, {"": {}}):
                cases.append(pytest.param(name, variant, id=f"{name}-{variant}" if variant else name))
    return cases


def _tiny_config():
    return tiny_config(
        vision_config={"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
                       "image_size": IMAGE_SIZE},
        text_config={"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 32},
        projection_dim=16,
        # Answers: as many as the layers are wide, as the mixin's SVD combination of adapters needs (ranks up to 20).
        num_labels=32,
        eos_token_id=EOS,  # the mixin's beam-search test strips padding by model.config.eos_token_id
    )


def _batch(prompt_length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(EOS + 2, VOCAB, (2, prompt_length), generator=generator)
    input_ids[:, 0] = BOS
    return {
        "input_ids": input_ids,
        "pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "attention_mask": torch.ones_like(input_ids),
    }


FOLDERS = {}  # model kind -> the folder its tiny model is saved in, filled by the model_folders fixture
_LOADED = {}


def _loader(model_class):
    """Stands for `model_class` where the mixin calls `transformers_class.from_pretrained(...)`, often several times
    in one test: a folder of `model_folders` is loaded once per set of arguments by MedVL's own from_pretrained, and
    each call gets a fresh copy; any other folder (e.g. a merged model the mixin saved) is loaded every time."""

    class Loader:
        @staticmethod
        def from_pretrained(model_id, **kwargs):
            if str(model_id) not in map(str, FOLDERS.values()):
                return model_class.from_pretrained(model_id, **kwargs)
            key = (str(model_id), tuple(sorted(kwargs.items(), key=str)))
            if key not in _LOADED:
                _LOADED[key] = model_class.from_pretrained(model_id, **kwargs)
            return copy.deepcopy(_LOADED[key])

    return Loader


class QuestionAnsweringTester(PeftCommonTester):
    transformers_class = _loader(MedVLForQuestionAnswering)
    torch_device = "cpu"

    def prepare_inputs_for_testing(self):
        batch = _batch(prompt_length=7)
        batch["input_ids"][1, 5:] = PAD  # a right-padded question
        batch["attention_mask"][1, 5:] = 0
        return batch


class GenerationTester(PeftCommonTester):
    transformers_class = _loader(MedVLForConditionalGeneration)
    torch_device = "cpu"

    def prepare_inputs_for_testing(self):
        return _batch(prompt_length=3)  # a question prompt; the answer is generated


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    for kind, model_class in (("qa", MedVLForQuestionAnswering), ("generation", MedVLForConditionalGeneration)):
        torch.manual_seed(0)
        FOLDERS[kind] = tmp_path_factory.mktemp(kind)
        model_class(_tiny_config()).save_pretrained(FOLDERS[kind])
    yield FOLDERS
    FOLDERS.clear()
    _LOADED.clear()


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("method, variant", _cases())
def test_peft_common(method, variant, adapter, model_folders):
    if method in SKIPS:
        pytest.skip(SKIPS[method])
    if (method, adapter) in ADAPTER_SKIPS:
        pytest.skip(ADAPTER_SKIPS[method, adapter])
    config_class, make_kwargs = ADAPTERS[adapter]
    if method in GENERATION_METHODS:
        tester, folder = GenerationTester(), model_folders["generation"]
        config_kwargs = {**make_kwargs(GENERATION_TARGETS, GENERATION_FEEDFORWARD), "task_type": "CAUSAL_LM"}
    else:
        tester, folder = QuestionAnsweringTester(), model_folders["qa"]
        config_kwargs = make_kwargs(QA_TARGETS, QA_FEEDFORWARD)
    parameters = inspect.signature(getattr(tester, method)).parameters
    arguments = {"model_id": str(folder), "config_cls": config_class, "config_kwargs": config_kwargs,
                 **VARIANTS.get(method, {}).get(variant, {})}
    unknown = [name for name, parameter in parameters.items()
               if name not in arguments and parameter.default is inspect.Parameter.empty]
    assert not unknown, f"peft's {method} takes {unknown}: say in this file how MedVL runs it (or why it cannot)"
    getattr(tester, method)(**arguments)
