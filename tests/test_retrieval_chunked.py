"""Retrieval recall at validation scale: a chunked computation in memory O(chunk x N), not an N x N matrix, equal to
the dense metric in both directions (a report identical to the true one is a hit); and validation embeddings
computed on every rank and gathered."""

import json
import threading
import tracemalloc
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate import PartialState
from helpers import launch_two_processes

from modeling_medvl import MedVLForPreTraining
from processing.synthcxr import generate_synthcxr
from processing.tokenizer_training import train_clinical_tokenizer
from train.data_loading import synthcxr_cache_folder
from train.data_sources import decoded_when_read, synthcxr_dataset
from train.metrics.medvl_retrieval.medvl_retrieval import embedding_similarity, retrieval_recall_at_k
from train.pretrain_setup import build_model, build_processor
from train.run_config import ModelArguments
from train.zero_shot_eval import (
    embed_on_every_rank,
    evaluate_pretraining,
    load_prompts,
    retrieval_chunk_size,
    retrieval_recall,
)

SCRIPT = Path(__file__).resolve().parent / "scripts" / "evaluate_on_every_rank.py"

KS = (1, 5, 10)


def dense(images, texts, reports):
    return retrieval_recall_at_k(embedding_similarity(images, texts), KS, group_ids=reports)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_chunked_recall_equals_the_dense_metric_both_ways(chunk_size):
    rng = np.random.default_rng(0)
    count = 60
    images = rng.normal(size=(count, 8))
    texts = images + rng.normal(scale=1.5, size=(count, 8))
    reports = [f"report {rng.integers(0, 25)}" for _ in range(count)]  # many duplicates
    texts[3] = texts[4]  # exact ties: broken in item order, as the dense metric's stable sort does
    expected = dense(images, texts, reports)
    results = retrieval_recall(images, texts, reports, ks=KS, chunk_size=chunk_size)
    for k in KS:
        assert results[f"recall@{k}"] == expected[f"image_to_text_recall@{k}"]
        assert results[f"text_to_image_recall@{k}"] == expected[f"text_to_image_recall@{k}"]
        assert results[f"chance_recall@{k}"] == pytest.approx(expected[f"chance_recall@{k}"])
    assert results["recall@1"] > results["chance_recall@1"]


def test_identical_reports_count_as_hits_in_both_directions():
    images = np.eye(3)
    texts = np.eye(3)[[1, 0, 2]]  # image 0 retrieves report 1 first and report 1 retrieves image 0 first
    distinct = retrieval_recall(images, texts, ["a", "b", "c"], ks=(1,))
    assert distinct["recall@1"] == distinct["text_to_image_recall@1"] == pytest.approx(1 / 3)
    same = retrieval_recall(images, texts, ["a", "a", "c"], ks=(1,))
    assert same["recall@1"] == same["text_to_image_recall@1"] == 1.0


def test_memory_stays_bounded_on_a_large_set():
    count, dim = 12_000, 8
    rng = np.random.default_rng(1)
    images = rng.normal(size=(count, dim)).astype(np.float32)
    texts = rng.normal(size=(count, dim)).astype(np.float32)
    reports = [str(i % 5000) for i in range(count)]
    budget = 16 * 2**20
    chunk = retrieval_chunk_size(count, np.float32, budget)
    assert 1 <= chunk < count
    tracemalloc.start()
    try:
        results = retrieval_recall(images, texts, reports, ks=(1, 10), max_chunk_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_bytes = count * count * 8  # what the dense float64 similarity matrix alone takes (1.15 GB)
    assert peak < 1.5 * budget < dense_bytes / 40, peak
    assert 0 <= results["recall@10"] <= 1 and 0 <= results["text_to_image_recall@10"] <= 1


class _ThreadRanks:
    """Two in-process "ranks" whose gather concatenates what both give, in rank order (as accelerate's does)."""

    def __init__(self, count):
        self.barrier, self.given = threading.Barrier(count), [None] * count

    def rank(self, index):
        ranks = self

        class Rank:
            num_processes, process_index, device = len(ranks.given), index, torch.device("cpu")

            def gather(self, tensor):
                ranks.given[index] = tensor
                ranks.barrier.wait()
                gathered = torch.cat(ranks.given)
                ranks.barrier.wait()
                return gathered

            def autocast(self):
                return torch.autocast("cpu", enabled=False)

        return Rank()


def test_every_rank_embeds_its_share_and_all_get_every_embedding():
    rows = list(range(7))
    embedded = {0: [], 1: []}

    def embed(start, stop, rank):
        embedded[rank].extend(rows[start:stop])
        values = torch.tensor(rows[start:stop], dtype=torch.float32)[:, None].repeat(1, 3)
        return values.numpy(), -values.numpy()

    ranks, results = _ThreadRanks(2), {}

    def run(rank):
        results[rank] = embed_on_every_rank(lambda a, b: embed(a, b, rank), len(rows), 3, ranks.rank(rank))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert embedded == {0: [0, 1, 2, 3], 1: [4, 5, 6]}
    for rank in (0, 1):
        images, texts = results[rank]
        np.testing.assert_array_equal(images[:, 0], rows)
        np.testing.assert_array_equal(texts[:, 0], [-row for row in rows])


@pytest.mark.slow  # a two-process `accelerate launch`
def test_two_process_evaluation_embeds_a_share_on_each_rank_and_matches_one_process(tmp_path):
    rows = 10
    tokenizer = train_clinical_tokenizer([s.report for s in generate_synthcxr(rows, size=16, seed=0)], vocab_size=400)
    torch.manual_seed(0)
    model = build_model(ModelArguments(), tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    options = {"n": rows, "size": 32, "seed": 3}
    synthcxr_dataset(options, tmp_path, PartialState())
    data = synthcxr_cache_folder(tmp_path, options)
    result = launch_two_processes(SCRIPT, tmp_path / "model", data, tmp_path, timeout=240)
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [rank["embedded"] for rank in ranks] == [[[0, 5]], [[5, 10]]]

    model = MedVLForPreTraining.from_pretrained(tmp_path / "model").medvl
    dataset = decoded_when_read(datasets.load_from_disk(str(data)), tmp_path)
    alone = evaluate_pretraining(model, build_processor(tokenizer, model.config.vision_config.image_size), dataset,
                                 load_prompts(), batch_size=4, max_length=64)
    for rank in ranks:
        assert rank["results"]["validation_rows"] == rows
        for key, value in alone.items():
            if isinstance(value, float):
                assert rank["results"][key] == pytest.approx(value, abs=1e-6), key
