"""Pretraining evaluation under 2 ranks: each embeds its share of the validation rows, all get the same results.

Launched by tests/test_retrieval_chunked.py as

    accelerate launch --multi_gpu --num_processes 2 tests/scripts/evaluate_on_every_rank.py MODEL DATA OUTPUT_DIR

Each rank writes OUTPUT_DIR/rank<r>.json: the row ranges it embedded and its results.
"""

import json
import sys
from pathlib import Path

import datasets
from accelerate import Accelerator
from transformers import AutoTokenizer

import train.zero_shot_eval as zero_shot_eval
from modeling_medvl import MedVLForPreTraining
from train.data_sources import decoded_when_read
from train.pretrain_setup import build_processor


def main(model_dir, data_dir, output_dir):
    accelerator = Accelerator(cpu=True)
    model = MedVLForPreTraining.from_pretrained(model_dir).medvl
    processor = build_processor(AutoTokenizer.from_pretrained(model_dir),
                                model.config.vision_config.image_size)
    dataset = decoded_when_read(datasets.load_from_disk(data_dir), Path(output_dir))
    embedded, embed = [], zero_shot_eval.embed_dataset

    def recording(*args, start=0, stop=None, **kwargs):
        embedded.append([start, stop])
        return embed(*args, start=start, stop=stop, **kwargs)

    zero_shot_eval.embed_dataset = recording
    results = zero_shot_eval.evaluate_pretraining(
        model, processor, dataset, zero_shot_eval.load_prompts(), batch_size=4, max_length=64,
        device=accelerator.device, accelerator=accelerator,
    )
    path = Path(output_dir) / f"rank{accelerator.process_index}.json"
    path.write_text(json.dumps({"embedded": embedded, "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
