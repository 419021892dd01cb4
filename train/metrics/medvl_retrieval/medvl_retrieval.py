"""Image-text retrieval recall@K, as an `evaluate` module loadable by path.

This file is also the one implementation of the rule that `train/zero_shot_eval.py` imports
(`retrieval_recall_at_k`), so it imports installed third-party packages only: `evaluate` copies it into
its cache before importing it, where no project file sits beside it.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Image-to-text and text-to-image recall@K for paired image and report embeddings: item i is image i and
its report i. Image i's query is a hit at K when one of its hit reports is among the K most similar
reports; text-to-image is the same on the transposed similarity matrix. Without `group_ids` the only
hit is the item's own partner. With `group_ids`, every item of the same group is a hit: many chest
X-ray studies share a report word for word (normal studies especially), and retrieving an identical
report is not an error. Ties in similarity are broken by item order (a stable sort), so a model whose
similarities are all equal scores at chance, not above it.

`chance_recall@K` is the expected recall@K of a random ranking under the same rule: the probability
that K items drawn without replacement include one of the m items of the query's group,
1 - C(N - m, K) / C(N, K), averaged over queries. It is the same in both directions.

From embeddings the similarity is cosine (both arrays are L2-normalised first).
"""

_KWARGS_DESCRIPTION = """
Args:
    similarity: (N, N) scores; row i holds image i's similarity to every report. Give either this or
        both embedding arrays.
    image_embeds: (N, D) image embeddings.
    text_embeds: (N, D) report embeddings, row i paired with image i.
    group_ids: optional, N ids (ints or strings, e.g. the report text); items with equal ids count as
        hits for each other. Default: every item its own group.
    ks: the K values (default (1, 5, 10)); a K above N is scored as N (every item retrieved).
Returns:
    image_to_text_recall@K, text_to_image_recall@K and chance_recall@K for each K, as floats in [0, 1].
Examples:
    >>> from train.metrics import load_metric
    >>> retrieval = load_metric("medvl_retrieval")
    >>> retrieval.compute(similarity=[[0.9, 0.1], [0.2, 0.8]], ks=[1])
    {'image_to_text_recall@1': 1.0, 'text_to_image_recall@1': 1.0, 'chance_recall@1': 0.5}
"""

_CITATION = """
@inproceedings{radford2021clip,
  title = {Learning Transferable Visual Models From Natural Language Supervision},
  author = {Radford, Alec and Kim, Jong Wook and Hallacy, Chris and others},
  booktitle = {International Conference on Machine Learning},
  year = {2021}
}
"""

DEFAULT_KS = (1, 5, 10)


def _as_matrix(values, name) -> np.ndarray:
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"medvl_retrieval: {name} must be a 2-D array of numbers ({error})") from None
    if matrix.ndim != 2:
        raise ValueError(f"medvl_retrieval: {name} must be 2-D, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"medvl_retrieval: {name} holds NaN or infinite values")
    return matrix


def square_similarity(similarity) -> np.ndarray:
    """`similarity` as a float64 (N, N) array with N >= 1, or a ValueError naming what is wrong."""
    matrix = _as_matrix(similarity, "similarity")
    if matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            f"medvl_retrieval: similarity must be a non-empty square (N images, N reports) matrix of paired "
            f"items, got shape {matrix.shape}"
        )
    return matrix


def embedding_similarity(image_embeds, text_embeds) -> np.ndarray:
    """Cosine similarity (N_images, N_texts) of two embedding arrays."""
    images, texts = _as_matrix(image_embeds, "image_embeds"), _as_matrix(text_embeds, "text_embeds")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"medvl_retrieval: image_embeds {images.shape} and text_embeds {texts.shape} differ in embedding size"
        )
    images = images / np.maximum(np.linalg.norm(images, axis=1, keepdims=True), 1e-12)
    texts = texts / np.maximum(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12)
    return images @ texts.T


def _first_hit_rank(similarity, is_hit) -> np.ndarray:
    """0-based rank of each row's best-ranked hit column; a stable sort keeps ties in column order."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    return np.take_along_axis(is_hit, order, axis=1).argmax(axis=1)


def retrieval_recall_at_k(similarity, ks=DEFAULT_KS, group_ids=None) -> dict:
    """Recall@K both ways and its chance level; see the module description for the hit rule."""
    similarity = square_similarity(similarity)
    count = len(similarity)
    if group_ids is None:
        groups = np.arange(count)
    else:
        group_ids = list(group_ids)
        if len(group_ids) != count:
            raise ValueError(f"medvl_retrieval: {len(group_ids)} group_ids for {count} paired items")
        # Compared as strings, the form the module's features store them in.
        _, groups = np.unique(np.asarray([str(group) for group in group_ids]), return_inverse=True)
    ks = list(ks)
    if not ks or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in ks):
        raise ValueError(f"medvl_retrieval: ks must be positive whole numbers, got {ks}")
    same_group = groups[:, None] == groups[None, :]
    image_to_text = _first_hit_rank(similarity, same_group)
    text_to_image = _first_hit_rank(similarity.T, same_group)
    group_sizes, queries = np.unique(same_group.sum(axis=1), return_counts=True)
    results = {}
    for k in ks:
        drawn = min(int(k), count)
        results[f"image_to_text_recall@{k}"] = float(np.mean(image_to_text < drawn))
        results[f"text_to_image_recall@{k}"] = float(np.mean(text_to_image < drawn))
        misses = [math.comb(count - int(size), drawn) / math.comb(count, drawn) for size in group_sizes]
        results[f"chance_recall@{k}"] = float(np.average(1.0 - np.asarray(misses), weights=queries))
    return results


# evaluate names a module after its class in snake case: MedvlRetrieval is medvl_retrieval.
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedvlRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"similarity": datasets.Sequence(datasets.Value("float64")), "group_ids": datasets.Value("string")}
            ),
        )

    def compute(self, *, similarity=None, image_embeds=None, text_embeds=None, group_ids=None, **kwargs):
        """Also takes the two embedding arrays in place of `similarity`; with no inputs at all, scores
        what `add_batch` stored (similarity rows and their group ids)."""
        if image_embeds is not None or text_embeds is not None:
            if similarity is not None or image_embeds is None or text_embeds is None:
                raise ValueError("medvl_retrieval: give `similarity`, or both `image_embeds` and `text_embeds`")
            similarity = embedding_similarity(image_embeds, text_embeds)
        if similarity is None:
            if group_ids is not None:
                raise ValueError("medvl_retrieval: group_ids need `similarity` or the embeddings beside them")
            return super().compute(**kwargs)
        # Checked before storing: a wrongly shaped matrix otherwise fails inside Arrow, unclearly.
        similarity = square_similarity(similarity)
        if group_ids is None:
            group_ids = range(len(similarity))
        return super().compute(similarity=similarity, group_ids=group_ids, **kwargs)

    def add_batch(self, *, similarity=None, group_ids=None, **kwargs):
        """Stores similarity rows (images against all N reports) and their group ids, kept as strings so
        that ints and report texts both work."""
        if group_ids is not None:
            group_ids = [str(group) for group in group_ids]
        super().add_batch(similarity=similarity, group_ids=group_ids, **kwargs)

    def _compute(self, similarity, group_ids, ks=DEFAULT_KS):
        return retrieval_recall_at_k(similarity, ks=ks, group_ids=group_ids)


__all__ = ["MedvlRetrieval", "embedding_similarity", "retrieval_recall_at_k", "square_similarity"]
