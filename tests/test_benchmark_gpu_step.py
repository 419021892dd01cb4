"""benchmarks/bench_gpu_step.py stays runnable for the session that gets a GPU: on CPU at a tiny size, every
contender does the same counted work, and the record holds what the summary and the note need."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_gpu_step  # noqa: E402
import summarize  # noqa: E402


def test_cpu_run_counts_the_same_work_for_every_contender(tmp_path):
    output = tmp_path / "gpu_step.json"
    bench_gpu_step.main(["--device", "cpu", "--dtype", "float32", "--sizes", "tiny", "--batch-size", "4",
                         "--warmup", "1", "--iters", "1", "--matmul-size", "128", "--no-batch-search",
                         "--output", str(output)])
    record = json.loads(output.read_text())
    contenders = record["sizes"]["tiny"]["contenders"]
    # open_clip has no tiny config: the tiny size compares MedVL with CLIPModel only.
    assert set(contenders) == {"medvl_itc", "medvl_full", "hf_clip"}
    medvl, clip, full = contenders["medvl_itc"], contenders["hf_clip"], contenders["medvl_full"]
    # Same towers, same loss: FlopCounterMode must count the same forward and backward (a different tower size,
    # sequence length or a skipped backward would show here), and the fusion path must add work.
    assert medvl["flops_per_step"] == pytest.approx(clip["flops_per_step"], rel=1e-3)
    assert full["flops_per_step"] > 1.05 * medvl["flops_per_step"]
    assert medvl["parameters"] == pytest.approx(clip["parameters"], rel=0.01)
    for result in contenders.values():
        assert result["pairs_per_second"] > 0 and result["mfu"] > 0 and len(result["step_times_s"]) == 1
    assert record["measured_matmul_flops_per_second"] > 0 and record["dtype"] == "float32"
    # The summary table reads the record: one row against CLIPModel, its ratio the two throughputs'.
    (line,) = summarize.table_rows(tmp_path)
    assert line[0] == "`bench_gpu_step.py` (`gpu_step.json`)" and "vs transformers' `CLIPModel`" in line[1]
    assert line[4] == f"{medvl['pairs_per_second'] / clip['pairs_per_second']:.2f}×" and line[5] == "≥ 1.2×"


def test_batch_search_reports_a_power_of_two_within_the_limit(tmp_path):
    size = bench_gpu_step.SIZES["tiny"]
    import torch

    assert bench_gpu_step.largest_batch(size, torch.device("cpu"), torch.float32, True, 2, 4) == 4


def test_cuda_without_a_gpu_is_refused_clearly(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench_gpu_step.main(["--output", str(tmp_path / "x.json")])
