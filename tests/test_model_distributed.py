"""A real 2-process DDP step (accelerate, gloo on CPU) equals one process over the same global batch: the loss, each
loss term and every parameter gradient, which shows gradients flow back through the contrastive all-gather."""

import importlib.util
from pathlib import Path

import pytest
import torch

from helpers import launch_two_processes

pytestmark = pytest.mark.slow  # one two-process `accelerate launch` that every test here reads
SCRIPT = Path(__file__).resolve().parent / "scripts" / "ddp_pretraining_step.py"
ATOL = 1e-5
RTOL = 1e-4


def load_script():
    spec = importlib.util.spec_from_file_location("ddp_pretraining_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("ddp") / "step.pt"
    result = launch_two_processes(SCRIPT, output, timeout=240)
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return torch.load(output, weights_only=True)


@pytest.fixture(scope="module")
def one_process_run() -> dict:
    script = load_script()
    model = script.build_model()
    loss, terms = script.forward_backward(model, script.make_global_batch(model.config))
    return {"loss": loss, "loss_terms": terms, "gradients": script.gradients(model)}


def test_two_ranks_ran_on_different_halves(two_process_run):
    assert two_process_run["num_processes"] == 2
    first, second = two_process_run["rank_losses"].tolist()
    assert abs(first - second) > 1e-4, "both ranks computed the same loss: did each get its own half?"


def test_loss_and_terms_equal_single_process(two_process_run, one_process_run):
    torch.testing.assert_close(two_process_run["loss"], one_process_run["loss"], atol=ATOL, rtol=RTOL)
    assert set(two_process_run["loss_terms"]) == set(one_process_run["loss_terms"]) == {"itc", "mlm"}
    for name, value in one_process_run["loss_terms"].items():
        torch.testing.assert_close(two_process_run["loss_terms"][name], value, atol=ATOL, rtol=RTOL, msg=name)


def test_gradients_equal_single_process(two_process_run, one_process_run):
    distributed, single = two_process_run["gradients"], one_process_run["gradients"]
    assert set(distributed) == set(single)
    # Both towers, the projections, the temperature and the fusion layers (MLM) all receive gradients.
    for part in ("vision", "text", "projection", "logit_scale", "fusion"):
        assert any(part in name for name in single), f"no gradient reaches any parameter named *{part}*"
    for name, grad in single.items():
        torch.testing.assert_close(distributed[name], grad, atol=ATOL, rtol=RTOL, msg=name)


def test_a_forward_on_rank_zero_alone_computes_the_local_loss(two_process_run):
    """No implicit collective: rank 0 alone asking for the contrastive loss finishes (the launch would hang
    otherwise), with the loss of its own batch."""
    alone = two_process_run["rank_zero_alone"]
    assert torch.isfinite(alone["loss"])
    torch.testing.assert_close(alone["loss"], alone["local_loss"])


def test_gather_without_gradient_is_detected(two_process_run, one_process_run):
    """Control: with an all-gather that carries no gradient, the projections' gradients no longer match."""
    broken, single = two_process_run["gradients_without_gather_grad"], one_process_run["gradients"]
    projection_names = [name for name in single if "projection" in name]
    worst = max((broken[name] - single[name]).abs().max().item() for name in projection_names)
    assert worst > 100 * ATOL
