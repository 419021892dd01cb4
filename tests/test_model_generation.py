"""The report generator under transformers' `generate()`, covering what transformers' GenerationTesterMixin checks
(the transformers source distribution ships no tests/generation, so that mixin cannot run here): greedy search,
seeded sampling, beam search, left-padded batches against one prompt at a time, no attention mask, the
`max_new_tokens` / `eos_token_id` stops, the cache on and off, bf16 on CPU, and `generate()` in a fresh process after
`save_pretrained`. The cache's own mechanics are in test_model_generation_cache.py."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import BOS, EOS, PAD, tiny_config

from modeling_medvl import MedVLForConditionalGeneration
from modeling_medvl.generation_medvl import GENERATION_CACHE_NAME

NEW_TOKENS = 5
# Two prompts of different lengths, left-padded as a tokenizer with padding_side="left" gives them.
PROMPTS = [[BOS, 40, 41, 42], [BOS, 50]]


@pytest.fixture(scope="module")
def reporter():
    torch.manual_seed(0)
    return MedVLForConditionalGeneration(tiny_config(num_decoder_layers=2)).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(len(PROMPTS), 3, 64, 64, generator=torch.Generator().manual_seed(1))


def left_padded(prompts=PROMPTS):
    width = max(map(len, prompts))
    input_ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return input_ids, attention_mask


def generate(model, images, **kwargs):
    """Greedy unless told otherwise, with no early stop, per-step logits and scores in a dict output."""
    input_ids, attention_mask = left_padded()
    options = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=images, do_sample=False,
                   max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, return_dict_in_generate=True,
                   output_scores=True, output_logits=True)
    return model.generate(**{**options, **kwargs})


def full_forward_log_probs(model, images, sequences, attention_mask, prompt_length):
    """Log-probabilities a plain forward pass over the whole sequences gives each generated token."""
    mask = torch.cat([attention_mask, torch.ones(sequences.shape[0], sequences.shape[1] - prompt_length,
                                                 dtype=attention_mask.dtype)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=sequences[:, :-1], attention_mask=mask[:, :-1], pixel_values=images).logits
    log_probs = logits[:, prompt_length - 1:].float().log_softmax(-1)
    return logits[:, prompt_length - 1:], log_probs.gather(-1, sequences[:, prompt_length:, None])[..., 0]


def test_greedy_takes_the_argmax_of_a_full_forward_pass_at_every_step(reporter, images):
    output = generate(reporter, images)
    input_ids, attention_mask = left_padded()
    prompt_length = input_ids.shape[1]
    assert output.sequences.shape == (2, prompt_length + NEW_TOKENS)
    assert torch.equal(output.sequences[:, :prompt_length], input_ids)
    logits, _ = full_forward_log_probs(reporter, images, output.sequences, attention_mask, prompt_length)
    torch.testing.assert_close(torch.stack(output.logits, dim=1), logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(logits.argmax(-1), output.sequences[:, prompt_length:])
    # min_new_tokens is the only processor: the scores are the logits with EOS pushed down until the end.
    scores = torch.stack(output.scores, dim=1)
    assert (scores[..., EOS] == -float("inf")).all()
    torch.testing.assert_close(scores[..., EOS + 1:], torch.stack(output.logits, dim=1)[..., EOS + 1:])


def test_sampling_with_a_seed_is_reproducible_and_a_new_seed_draws_anew(reporter, images):
    def sample(seed, **kwargs):
        torch.manual_seed(seed)
        return generate(reporter, images, do_sample=True, **kwargs).sequences

    first = sample(7)
    assert torch.equal(sample(7), first)
    assert not torch.equal(sample(8), first)  # 1,000 nearly uniform tokens: 10 equal draws do not happen
    # Each of 3 returned sequences per prompt is its own draw, after the same prompt.
    several = sample(7, num_return_sequences=3)
    assert several.shape == (6, first.shape[1])
    assert torch.equal(several[::3, :4], first[:, :4]) and len({tuple(row) for row in several.tolist()}) == 6
    # Top-k of 1 leaves one token to draw: the greedy choice.
    assert torch.equal(sample(7, top_k=1), generate(reporter, images).sequences)


def test_beam_search_scores_are_the_sequences_log_probabilities(reporter, images):
    output = generate(reporter, images, num_beams=3, num_return_sequences=3, length_penalty=0.0)
    input_ids, attention_mask = left_padded()
    prompt_length = input_ids.shape[1]
    assert output.sequences.shape == (6, prompt_length + NEW_TOKENS)
    _, log_probs = full_forward_log_probs(reporter, images.repeat_interleave(3, dim=0), output.sequences,
                                          attention_mask.repeat_interleave(3, dim=0), prompt_length)
    # length_penalty=0: a beam's score is the plain sum of its tokens' log-probabilities. min_new_tokens only masks
    # EOS, so the sums are those of the unprocessed model.
    torch.testing.assert_close(output.sequences_scores, log_probs.sum(-1), atol=1e-4, rtol=1e-5)
    scores = output.sequences_scores.view(2, 3)
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "beams come back best first"
    greedy = generate(reporter, images)
    _, greedy_log_probs = full_forward_log_probs(reporter, images, greedy.sequences, attention_mask, prompt_length)
    # Beam search keeps the greedy path while it is among the best 3, so it never scores lower here.
    assert (scores[:, 0] >= greedy_log_probs.sum(-1) - 1e-5).all()


@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
def test_left_padded_batch_equals_one_prompt_at_a_time(reporter, images, mode):
    batched = generate(reporter, images, **mode)
    for row, prompt in enumerate(PROMPTS):
        alone = reporter.generate(input_ids=torch.tensor([prompt]), pixel_values=images[row : row + 1],
                                  do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  return_dict_in_generate=True, output_logits=True, **mode)
        assert torch.equal(batched.sequences[row, -NEW_TOKENS:], alone.sequences[0, -NEW_TOKENS:])
        if not mode:
            torch.testing.assert_close(torch.stack(batched.logits, 1)[row], torch.stack(alone.logits, 1)[0],
                                       atol=1e-5, rtol=1e-5)


def test_without_an_attention_mask(reporter, images):
    """One unpadded prompt needs no mask; for a padded batch, generate() derives the mask from the pad token."""
    prompt = torch.tensor([PROMPTS[0]])
    with_mask = reporter.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=images[:1],
                                  do_sample=False, max_new_tokens=NEW_TOKENS)
    assert torch.equal(reporter.generate(input_ids=prompt, pixel_values=images[:1], do_sample=False,
                                         max_new_tokens=NEW_TOKENS), with_mask)
    assert reporter.generation_config.pad_token_id == PAD
    assert torch.equal(generate(reporter, images, attention_mask=None).sequences, generate(reporter, images).sequences)


def test_max_new_tokens_and_eos_stop_generation(reporter, images):
    input_ids, _ = left_padded()
    prompt_length = input_ids.shape[1]
    free = generate(reporter, images, max_new_tokens=8, min_new_tokens=0).sequences
    assert free.shape[1] == prompt_length + 8 and not (free[:, prompt_length:] == EOS).any()
    assert generate(reporter, images, max_new_tokens=3, min_new_tokens=0).sequences.shape[1] == prompt_length + 3
    assert generate(reporter, images, max_length=prompt_length + 2, max_new_tokens=None,
                    min_new_tokens=0).sequences.shape[1] == prompt_length + 2
    # Make row 0's third generated token the end token: row 0 stops there and is padded while row 1 goes on.
    stop = free[0, prompt_length + 2].item()
    assert stop not in free[1, prompt_length:].tolist() and stop not in free[0, prompt_length : prompt_length + 2]
    stopped = generate(reporter, images, max_new_tokens=8, min_new_tokens=0, eos_token_id=stop).sequences
    assert torch.equal(stopped[0, : prompt_length + 3], free[0, : prompt_length + 3])
    assert (stopped[0, prompt_length + 3:] == PAD).all()
    assert torch.equal(stopped[1], free[1])
    # Both rows stop: the output ends with the later one's end token.
    stop_both = [stop, free[1, prompt_length + 1].item()]
    both = generate(reporter, images, max_new_tokens=8, min_new_tokens=0, eos_token_id=stop_both).sequences
    assert both.shape[1] == prompt_length + 3 and both[1, prompt_length + 1] == stop_both[1]
    # min_new_tokens holds the end token back.
    held = generate(reporter, images, max_new_tokens=8, min_new_tokens=4, eos_token_id=stop).sequences
    assert held.shape[1] > prompt_length + 3 and stop not in held[:, prompt_length : prompt_length + 4]


@pytest.mark.parametrize("mode", [dict(), dict(num_beams=3, num_return_sequences=2), dict(do_sample=True)],
                         ids=["greedy", "beam", "sample"])
def test_cache_on_and_off_generate_the_same(reporter, images, mode):
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(5)
        outputs.append(generate(reporter, images, use_cache=use_cache, **mode))
    cached, uncached = outputs
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.scores), torch.stack(uncached.scores), atol=1e-5, rtol=1e-5)
    # The cache comes back under this transformers' name for it (`cache` from 5.24, `past_key_values` before).
    assert cached.get(GENERATION_CACHE_NAME) is not None and uncached.get(GENERATION_CACHE_NAME) is None


def test_bf16_generation_on_cpu(reporter, images):
    half = copy.deepcopy(reporter).to(torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    output = generate(half, images.to(torch.bfloat16))
    input_ids, attention_mask = left_padded()
    logits, _ = full_forward_log_probs(half, images.to(torch.bfloat16), output.sequences, attention_mask,
                                       input_ids.shape[1])
    # Logits have a spread of about 0.2 here; the cached steps are within 0.004 of one bf16 forward pass and that
    # pass within 0.008 of float32 (bf16 rounding): checked with 5x margins. generate() returns float32 scores.
    torch.testing.assert_close(torch.stack(output.logits, 1), logits.float(), atol=0.02, rtol=0)
    full_precision, _ = full_forward_log_probs(reporter, images, output.sequences, attention_mask, input_ids.shape[1])
    torch.testing.assert_close(logits.float(), full_precision, atol=0.04, rtol=0)
    # Beam search reorders a bf16 cache.
    beams = generate(half, images.to(torch.bfloat16), num_beams=2)
    assert beams.sequences.shape == output.sequences.shape and torch.isfinite(beams.sequences_scores).all()


FRESH_PROCESS = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from transformers import AutoModelForImageTextToText
    folder = sys.argv[1]
    inputs = torch.load(folder + "/inputs.pt")
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    results = {"module": type(model).__module__, "defaults": model.generate(**inputs).tolist()}
    results["greedy"] = model.generate(**inputs, num_beams=1).tolist()
    torch.manual_seed(11)
    results["sampled"] = model.generate(**inputs, num_beams=1, do_sample=True).tolist()
    torch.save(results, folder + "/results.pt")
    """
)


@pytest.mark.slow
def test_generate_after_save_pretrained_in_a_fresh_process(reporter, images, tmp_path):
    """The saved folder carries the generation settings; a fresh process loading it through the Auto class with
    remote code (offline, outside the repository, project off the path) generates exactly what this one does."""
    model = copy.deepcopy(reporter)
    model.generation_config.num_beams = 2
    model.generation_config.max_new_tokens = NEW_TOKENS
    model.generation_config.min_new_tokens = NEW_TOKENS
    model.save_pretrained(tmp_path)
    input_ids, attention_mask = left_padded()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": images}
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = {"defaults": model.generate(**inputs), "greedy": model.generate(**inputs, num_beams=1)}
    torch.manual_seed(11)
    expected["sampled"] = model.generate(**inputs, num_beams=1, do_sample=True)
    assert expected["defaults"].shape[1] == input_ids.shape[1] + NEW_TOKENS
    assert not torch.equal(expected["defaults"], expected["greedy"])  # the saved num_beams is in force
    subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, str(tmp_path)], cwd=tmp_path, check=True,
                   env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=300)
    results = torch.load(tmp_path / "results.pt")
    assert not results["module"].startswith("modeling_medvl"), "loaded from the installed package, not the folder"
    for name, sequences in expected.items():
        assert results[name] == sequences.tolist(), name
