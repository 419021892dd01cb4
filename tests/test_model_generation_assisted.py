"""Assisted decoding of the report generator: `generate(assistant_model=...)` (a second, smaller MedVL model drafts
tokens) and prompt-lookup decoding (`prompt_lookup_num_tokens=`, drafts copied from the text so far). Greedy, both
must give exactly what plain greedy decoding gives, whatever the drafts: the main model verifies every drafted
token and keeps only those it would have chosen itself. Also after `save_pretrained`, with the saved code."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import BOS, tiny_config

from modeling_medvl import MedVLForConditionalGeneration

NEW_TOKENS = 12
IMAGES = 4


def wide_reporter(num_decoder_layers, seed):
    """Weights drawn wider than the preset's (std 0.3, not 0.02): at 0.02 every image gives the same greedy report,
    which would leave the image's way through assisted decoding unchecked."""
    torch.manual_seed(seed)
    config = tiny_config(num_decoder_layers=num_decoder_layers, initializer_range=0.3,
                         text_config={"initializer_range": 0.3})
    return MedVLForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def reporter():
    return wide_reporter(num_decoder_layers=2, seed=0)


@pytest.fixture(scope="module")
def assistants(reporter):
    """A stranger (other seed, one decoder layer), whose drafts the reporter rejects; and a near twin (the reporter
    with noise on its output bias), whose drafts it accepts in part."""
    near_twin = copy.deepcopy(reporter)
    with torch.no_grad():
        bias = near_twin.lm_head.decoder.bias
        bias.add_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(2)))
    return {"stranger": wide_reporter(num_decoder_layers=1, seed=1), "near_twin": near_twin}


@pytest.fixture(scope="module")
def cases():
    """(prompt, image) pairs: one prompt, several images."""
    images = torch.randn(IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return [(torch.tensor([[BOS, 40, 41, 42]]), images[index : index + 1]) for index in range(IMAGES)]


def greedy(model, prompt, image, **kwargs):
    return model.generate(input_ids=prompt, pixel_values=image, do_sample=False, max_new_tokens=NEW_TOKENS,
                          min_new_tokens=NEW_TOKENS, **kwargs)


def greedy_counting_drafts(model, prompt, image, **kwargs):
    """(sequences, drafted, accepted): how many drafted tokens the model verified and how many it kept, read off its
    decoder's calls. Each call reads the drafts after the last kept token (the first call, after the prompt) and
    yields the kept drafts plus one token of its own."""
    lengths = []
    hook = model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        sequences = greedy(model, prompt, image, **kwargs)
    finally:
        hook.remove()
    drafted = sum(lengths) - prompt.shape[1] - (len(lengths) - 1)
    return sequences, drafted, NEW_TOKENS - len(lengths)


def test_the_image_decides_the_greedy_report(reporter, cases):
    reports = {tuple(greedy(reporter, prompt, image)[0, prompt.shape[1] :].tolist()) for prompt, image in cases}
    assert len(reports) == IMAGES


@pytest.mark.parametrize("assistant_name", ["stranger", "near_twin"])
def test_assisted_greedy_equals_greedy(reporter, assistants, cases, assistant_name):
    drafted = accepted = 0
    for prompt, image in cases:
        assisted, case_drafted, case_accepted = greedy_counting_drafts(
            reporter, prompt, image, assistant_model=assistants[assistant_name]
        )
        assert torch.equal(assisted, greedy(reporter, prompt, image))
        drafted, accepted = drafted + case_drafted, accepted + case_accepted
    assert drafted > accepted, "some drafted tokens were rejected"
    if assistant_name == "near_twin":
        assert accepted > 0, "some drafted tokens were kept"


def test_prompt_lookup_equals_greedy(reporter, cases):
    drafted = 0
    for prompt, image in cases:
        looked_up, case_drafted, _ = greedy_counting_drafts(reporter, prompt, image, prompt_lookup_num_tokens=3)
        assert torch.equal(looked_up, greedy(reporter, prompt, image))
        drafted += case_drafted
    assert drafted > 0, "the reports repeat themselves, so there were drafts to verify"


@pytest.mark.parametrize("mode", ["assistant", "prompt_lookup"])
def test_a_batch_of_several_prompts_is_refused_by_transformers(reporter, assistants, cases, mode):
    options = {"assistant_model": assistants["stranger"]} if mode == "assistant" else {"prompt_lookup_num_tokens": 3}
    prompts = torch.cat([prompt for prompt, _ in cases[:2]])
    images = torch.cat([image for _, image in cases[:2]])
    with pytest.raises(ValueError, match="only supported for batch_size = 1"):
        greedy(reporter, prompts, images, **options)


FRESH_PROCESS = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from transformers import AutoModelForImageTextToText
    folder = sys.argv[1]
    cases = torch.load(folder + "/cases.pt")
    reporter, assistant = (
        AutoModelForImageTextToText.from_pretrained(folder + name, trust_remote_code=True).eval()
        for name in ("/reporter", "/assistant")
    )
    options = dict(do_sample=False, max_new_tokens=cases["new_tokens"], min_new_tokens=cases["new_tokens"])
    results = {"modules": [type(reporter).__module__, type(assistant).__module__], "assisted": [], "looked_up": []}
    for prompt, image in cases["inputs"]:
        inputs = dict(input_ids=prompt, pixel_values=image, **options)
        results["assisted"].append(reporter.generate(**inputs, assistant_model=assistant).tolist())
        results["looked_up"].append(reporter.generate(**inputs, prompt_lookup_num_tokens=3).tolist())
    torch.save(results, folder + "/results.pt")
    """
)


@pytest.mark.slow
def test_assisted_decoding_after_save_pretrained_in_a_fresh_process(reporter, assistants, cases, tmp_path):
    """Both models saved and loaded back through the Auto class with the saved code (offline, fresh process, project
    off the path): assisted and prompt-lookup decoding give this process's plain greedy reports."""
    reporter.save_pretrained(tmp_path / "reporter")
    assistants["near_twin"].save_pretrained(tmp_path / "assistant")
    torch.save({"inputs": cases, "new_tokens": NEW_TOKENS}, tmp_path / "cases.pt")
    subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(tmp_path)], cwd=tmp_path, check=True,
                   env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=300)
    results = torch.load(tmp_path / "results.pt")
    assert not any(module.startswith("modeling_medvl") for module in results["modules"]), "loaded from the folders"
    expected = [greedy(reporter, prompt, image).tolist() for prompt, image in cases]
    assert results["assisted"] == expected
    assert results["looked_up"] == expected
