import json
import random
import re
import warnings

import datasets
import pytest
from transformers import AutoTokenizer

from processing.clinical_text_medvl import DEID_TOKEN, ClinicalTextNormalizer
from processing.tokenizer_training import CLIP_VOCAB_SIZE, train_clinical_tokenizer
from train.cli import main as medvl_main

SIDES = ("left", "right", "L", "R")
FINDINGS = (
    "There is a small {side} pleural effusion.",
    "No PTX.",
    "Mild pulmonary oedema.",
    "{side} base atelectasis.",
    "The cardiac silhouette is enlarged.",
    "ETT tip 4 cm above the carina.",
    "NG tube courses into the stomach.",
    "Patchy opacity in the {lobe} concerning for PNA.",
    "Lungs are clear without focal consolidation.",
    "PA and lateral views of the chest.",
)
LOBES = ("RLL", "LLL", "RUL", "LUL", "lingula")


def make_report(rng):
    findings = " ".join(rng.choice(FINDINGS).format(side=rng.choice(SIDES), lobe=rng.choice(LOBES)) for _ in range(4))
    return (
        f"INDICATION: ___ year old with SOB.\nCOMPARISON: {rng.randint(1, 12)}/{rng.randint(1, 28)}/2019.\n"
        f"FINDINGS: {findings}\nIMPRESSION: Findings discussed with Dr. {rng.choice(['Smith', 'Jones', 'Lee'])} "
        f"at {rng.randint(1, 12)}:{rng.randint(10, 59)} pm. No acute process."
    )


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    return [make_report(rng) for _ in range(300)]


@pytest.fixture(scope="module")
def bert_tokenizer(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_clinical_tokenizer(corpus, vocab_size=400)


def test_bert_style_special_tokens(bert_tokenizer):
    tok = bert_tokenizer
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert tok.deid_token == DEID_TOKEN and tok.deid_token_id == tok.convert_tokens_to_ids(DEID_TOKEN)
    assert tok.model_max_length == 256
    ids = tok("No pneumothorax.").input_ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_vocabulary_size_is_reached_when_the_corpus_allows(bert_tokenizer):
    assert len(bert_tokenizer) == 400
    assert max(bert_tokenizer.get_vocab().values()) == 399


def test_normaliser_runs_before_training(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        normalised = train_clinical_tokenizer(corpus, vocab_size=2000).get_vocab()
        raw = train_clinical_tokenizer(corpus, vocab_size=2000, normalizer=None).get_vocab()
        no_deid = train_clinical_tokenizer(corpus, vocab_size=2000, normalizer={"deidentify": False}).get_vocab()
    # Expanded and de-identified forms become whole tokens; the raw forms never occur.
    assert "Ġpneumothorax" in normalised and "Ġedema" in normalised
    assert "ĠPTX" not in normalised and "ĠSmith" not in normalised and "Ġoedema" not in normalised
    assert "ĠPTX" in raw and "ĠSmith" in raw and "Ġpneumothorax" not in raw
    assert "ĠSmith" in no_deid and "Ġpneumothorax" in no_deid


def test_deid_token_is_one_token(bert_tokenizer):
    tok = bert_tokenizer
    text = ClinicalTextNormalizer()(make_report(random.Random(5)))
    assert DEID_TOKEN in text
    tokens = tok.tokenize(text)
    assert tokens.count(DEID_TOKEN) == text.count(DEID_TOKEN)
    assert not any(piece in tokens for piece in ("DE", "ID", "[", "Ġ["))


def test_decode_round_trip(bert_tokenizer):
    tok = bert_tokenizer
    text = "Small left effusion, 1.5 cm nodule ± calcification; café-au-lait [DEID] at [DEID]."
    ids = tok(text).input_ids
    assert tok.decode(ids[1:-1]) == text
    assert tok.decode(ids) == f"[CLS]{text}[SEP]"


def test_truncation_at_max_length(bert_tokenizer):
    tok = bert_tokenizer
    long_text = " ".join(["Moderate right pleural effusion with adjacent atelectasis."] * 100)
    ids = tok(long_text, truncation=True).input_ids
    assert len(ids) == 256 and ids[-1] == tok.sep_token_id
    padded = tok("No pneumothorax.", padding="max_length", truncation=True)
    assert len(padded.input_ids) == 256 and padded.input_ids[-1] == tok.pad_token_id
    assert sum(padded.attention_mask) == len(tok("No pneumothorax.").input_ids)


def test_clip_style_with_an_unfillable_target(corpus):
    with pytest.warns(UserWarning, match=f"filled \\d+ of the {CLIP_VOCAB_SIZE} vocabulary entries"):
        tok = train_clinical_tokenizer(corpus[:50], vocab_size=CLIP_VOCAB_SIZE, style="clip")
    # BPE stops when no pair is frequent enough: the vocabulary is smaller than asked, never larger,
    # and every id fits an embedding table sized for the target.
    assert 256 + 4 <= len(tok) < CLIP_VOCAB_SIZE
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>", "<|pad|>")
    ids = tok("No pneumothorax [DEID].").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.deid_token_id in ids
    assert tok.mask_token is None and tok.cls_token is None


def test_vocab_size_below_the_alphabet_is_rejected(corpus):
    with pytest.raises(ValueError, match="vocab_size must be an int >= 262"):
        train_clinical_tokenizer(corpus, vocab_size=100)
    with pytest.raises(ValueError, match="style must be one of"):
        train_clinical_tokenizer(corpus, style="gpt")


def test_saved_tokenizer_reloads_offline(bert_tokenizer, tmp_path):
    bert_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Small left effusion. Dr. [DEID] notified."
    assert reloaded(text).input_ids == bert_tokenizer(text).input_ids
    assert reloaded.model_max_length == 256 and reloaded.deid_token == DEID_TOKEN
    assert reloaded.mask_token_id == bert_tokenizer.mask_token_id and len(reloaded) == len(bert_tokenizer)


def test_datasets_column_trains_the_same_vocabulary(corpus, bert_tokenizer):
    dataset = datasets.Dataset.from_dict({"report": corpus, "id": list(range(len(corpus)))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from_dataset = train_clinical_tokenizer(dataset, vocab_size=400)
        from_stream = train_clinical_tokenizer(dataset.to_iterable_dataset(), vocab_size=400)
    assert from_dataset.get_vocab() == bert_tokenizer.get_vocab() == from_stream.get_vocab()
    with pytest.raises(ValueError, match="column 'text' not in"):
        train_clinical_tokenizer(dataset, text_column="text")


def test_normalising_in_worker_processes_gives_the_same_tokenizer(corpus, bert_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel = train_clinical_tokenizer(corpus, vocab_size=400, num_proc=2)
    assert parallel.get_vocab() == bert_tokenizer.get_vocab()
    with pytest.raises(ValueError, match="text at index 5 is empty"):
        train_clinical_tokenizer(corpus[:5] + [""] + corpus[5:], vocab_size=400, num_proc=2)


@pytest.mark.parametrize("bad, problem", [("", "is empty"), (None, "is not a string (NoneType)")])
def test_bad_text_names_its_index(corpus, bad, problem):
    texts = corpus[:2] + [bad] + corpus[2:20]
    with pytest.raises(ValueError, match=re.escape(f"text at index 2 {problem}")):
        train_clinical_tokenizer(texts, vocab_size=300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = train_clinical_tokenizer(texts, vocab_size=300, skip_invalid=True)
    messages = [str(w.message) for w in caught]
    assert f"skipping text at index 2: it {problem}" in messages
    assert "skipped 1 invalid texts of 21" in messages
    assert len(tok) <= 300


def test_cli_trains_and_saves(corpus, tmp_path):
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text("".join(json.dumps({"report": text, "study": i}) + "\n" for i, text in enumerate(corpus[:150])))
    folder = tmp_path / "mimic"
    for i, text in enumerate(corpus[150:]):
        (folder / f"p{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"p{i % 3}" / f"s{i}.txt").write_text(text)
    out = tmp_path / "tok"
    code = medvl_main(["tokenizer", "train", "--input", str(jsonl), str(folder), "--vocab-size", "400",
                       "--style", "bert", "--out", str(out), "--quiet"])
    assert code == 0
    reloaded = AutoTokenizer.from_pretrained(out)
    assert len(reloaded) == 400 and reloaded.cls_token == "[CLS]"
    assert ClinicalTextNormalizer(**json.loads((out / "clinical_text_normalizer.json").read_text())) == ClinicalTextNormalizer()


def test_cli_reports_a_malformed_line(tmp_path, capsys):
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text(json.dumps({"report": "No PTX."}) + "\n{not json\n")
    code = medvl_main(["tokenizer", "train", "--input", str(jsonl), "--out", str(tmp_path / "tok"), "--quiet"])
    assert code == 2
    assert f"{jsonl}:2: not valid JSON" in capsys.readouterr().err
    code = medvl_main(["tokenizer", "train", "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "tok")])
    assert code == 2 and "input not found" in capsys.readouterr().err
