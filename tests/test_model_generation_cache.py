"""Report generation on the installed transformers: `generate()` hands MedVL its cache under the current name
(`cache` from transformers 5.24, `past_key_values` before), MedVL returns it under that name, the cache is reused at
every step (one new token through the decoder per step), and the image tokens' cross-attention keys/values are
projected once per generation, not at every step."""

import inspect

import pytest
import torch
from helpers import tiny_config
from transformers import GenerationMixin
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from modeling_medvl import MedVLForConditionalGeneration
from modeling_medvl.generation_medvl import GENERATION_CACHE_NAME

NEW_TOKENS = 6


@pytest.fixture()
def reporter():
    torch.manual_seed(0)
    return MedVLForConditionalGeneration(tiny_config(num_decoder_layers=2)).eval()


def test_cache_name_is_the_one_this_transformers_passes():
    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    assert GENERATION_CACHE_NAME in parameters


def test_generation_reuses_the_cache_at_every_step(reporter):
    decoder_lengths, caches = [], []

    def record(module, args, kwargs):
        decoder_lengths.append(kwargs["input_ids"].shape[1])
        caches.append(kwargs["cache"])

    reporter.decoder.register_forward_pre_hook(record, with_kwargs=True)
    prompt = torch.tensor([[1, 7, 9]])
    reporter.generate(input_ids=prompt, pixel_values=torch.randn(1, 3, 64, 64), max_new_tokens=NEW_TOKENS,
                      min_new_tokens=NEW_TOKENS, do_sample=False)
    assert decoder_lengths == [3] + [1] * (NEW_TOKENS - 1), "a dropped cache re-reads the whole text every step"
    assert all(isinstance(cache, EncoderDecoderCache) for cache in caches)
    assert all(cache is caches[0] for cache in caches[1:]), "one cache object carried through the generation"
    assert caches[-1].get_seq_length() == 3 + NEW_TOKENS - 1


def test_cross_attention_projects_the_image_tokens_once_per_generation(reporter):
    projections = []
    for layer in reporter.decoder.layers:
        layer.cross_attn.k_proj.register_forward_hook(lambda module, args, output: projections.append(args[0].shape))
    reporter.generate(input_ids=torch.tensor([[1, 5], [1, 6]]), pixel_values=torch.randn(2, 3, 64, 64),
                      max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    assert len(projections) == len(reporter.decoder.layers), f"image keys projected {len(projections)} times"


def test_cached_and_uncached_decoding_agree_step_by_step(reporter):
    pixel_values = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[1, 11, 12, 13, 14], [1, 21, 22, 23, 24]])
    with torch.no_grad():
        full = reporter(input_ids=ids, pixel_values=pixel_values).logits
        first = reporter(input_ids=ids[:, :2], pixel_values=pixel_values, use_cache=True)
        cache, image_tokens, stepped = first.cache, first.image_tokens, [first.logits]
        assert isinstance(cache, EncoderDecoderCache)
        for position in range(2, ids.shape[1]):
            step = reporter(input_ids=ids[:, position : position + 1], image_tokens=image_tokens, cache=cache)
            assert step.cache is cache
            stepped.append(step.logits)
    torch.testing.assert_close(torch.cat(stepped, dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_former_cache_name_is_accepted_and_a_plain_cache_is_wrapped(reporter):
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        output = reporter(input_ids=torch.tensor([[1, 4]]), pixel_values=pixel_values, past_key_values=DynamicCache())
        assert isinstance(output.cache, EncoderDecoderCache) and output.cache.get_seq_length() == 2
        with pytest.raises(ValueError, match="past_key_values"):
            reporter(input_ids=torch.tensor([[1]]), pixel_values=pixel_values, cache=DynamicCache(),
                     past_key_values=DynamicCache())


def test_training_with_labels_builds_no_cache(reporter):
    reporter.train()
    ids = torch.tensor([[1, 5, 6, 2]])
    output = reporter(input_ids=ids, pixel_values=torch.randn(1, 3, 64, 64), labels=ids)
    assert output.cache is None and torch.isfinite(output.loss)
    output.loss.backward()
