"""Tiny random source models in their upstream formats, written to tmp folders (nothing is downloaded):
transformers CLIPModel / BertModel folders with tokenizers, and the token batches that go with them."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertModel, BertTokenizerFast, CLIPConfig, CLIPModel, PreTrainedTokenizerFast

VOCAB = 99
CONTEXT = 16
TINY_CLIP_TEXT = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 64, "max_position_embeddings": CONTEXT, "bos_token_id": VOCAB - 2,
                  "eos_token_id": VOCAB - 1, "pad_token_id": 1}
TINY_CLIP_VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                    "image_size": 32, "patch_size": 8}
TINY_BERT = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 40}
# PubMedBERT's special-token layout: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4.
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def word_level_tokenizer(size: int) -> PreTrainedTokenizerFast:
    vocab = {f"w{index}": index for index in range(size)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", pad_token="w0")


def save_tiny_clip(folder, tokenizer_size: int | None = VOCAB, seed: int = 0) -> CLIPModel:
    """A random tiny CLIPModel (its temperature moved off the default) saved in `folder`, with a tokenizer."""
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=TINY_CLIP_TEXT, vision_config=TINY_CLIP_VISION, projection_dim=24)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.1)
    model.save_pretrained(folder)
    if tokenizer_size is not None:
        word_level_tokenizer(tokenizer_size).save_pretrained(folder)
    return model


def save_tiny_bert(folder, seed: int = 0) -> BertModel:
    """A random tiny BertModel saved in `folder` with a WordPiece tokenizer of the same vocabulary."""
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**TINY_BERT)).eval()
    model.save_pretrained(folder)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(BERT_SPECIALS + [f"w{index}" for index in range(VOCAB - 5)]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab_file)).save_pretrained(folder)
    return model


def causal_batch(length: int = CONTEXT):
    """Two CLIP-style texts (start ... end, then padding 0) of `length` tokens, and their attention mask."""
    rows = [[VOCAB - 2, 5, 6, 7, VOCAB - 1], [VOCAB - 2, 8, 9, 10, 11, 12, 13, VOCAB - 1]]
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row)
    return input_ids, (input_ids != 0).long()


def bert_batch(length: int = CONTEXT):
    """Two BERT-style texts ([CLS] ... [SEP], then [PAD]) and their attention mask."""
    rows = [[2, 10, 11, 3], [2, 12, 13, 14, 15, 16, 3]]
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row)
    return input_ids, (input_ids != 0).long()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()
