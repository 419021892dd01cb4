"""`medvl convert`: turn weights users already have (local files only) into a MedVL model folder that loads with
`AutoModel.from_pretrained(out, trust_remote_code=True)`, with the source's tokenizer (and image processor) kept.

    medvl convert --from clip --src clip-vit-large-patch14-336/ --out medvl-clip-l14-336/ --fusion-type cross_attention
    medvl convert --from open_clip --src BiomedCLIP/ --out medvl-biomedclip/        # open_clip Hub-layout folder
    medvl convert --from open_clip --src ViT-B-16.safetensors --model-name ViT-B-16 --out medvl-b16/
    medvl convert --from towers --preset swin-base-384 --src swin_base_224.safetensors --text-model cxr-bert/ \\
        --out medvl-swin/                                                              # timm file + BERT folder
"""

import json
from pathlib import Path

from train.user_errors import UserError, report

FORMATS = ("clip", "open_clip", "towers")


def _save_local(kind: str, loader, source, out: Path) -> bool:
    """Save `loader.from_pretrained(source)` (a local folder, or a Hub name in the local cache) into `out`; False if
    there is none."""
    from modeling_medvl.tower_init_medvl import TOKENIZER_FILES

    # A folder holds one only with one of these files (transformers would otherwise build an empty one).
    files = TOKENIZER_FILES if kind == "tokenizer" else ("preprocessor_config.json",)
    if not source or (Path(source).is_dir() and not any((Path(source) / name).is_file() for name in files)):
        return False
    try:
        loader.from_pretrained(source, local_files_only=True).save_pretrained(out)
    except (OSError, ValueError):
        return False
    return True


def convert(args):
    """The converted model, and the folders its tokenizer / image processor come from."""
    from modeling_medvl import MedVLConfig, MedVLModel
    from train.pretrain_setup import config_overrides

    overrides = {"fusion_type": args.fusion_type} if args.fusion_type else {}
    if args.source_format != "towers":
        overrides.update(config_overrides(args.model_overrides, MedVLConfig()))
    if args.source_format == "clip":
        return MedVLModel.from_clip(args.src, **overrides), args.src, args.src
    if args.source_format == "open_clip":
        model = MedVLModel.from_open_clip(args.src, model_name=args.model_name, **overrides)
        tokenizer = None
        config_file = Path(args.src) / "open_clip_config.json"
        if config_file.is_file():
            text_cfg = json.loads(config_file.read_text()).get("model_cfg", {}).get("text_cfg", {})
            tokenizer = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
        return model, tokenizer, None
    if not args.preset:
        raise UserError("--from towers needs --preset (the MedVL architecture the towers load into, e.g. swin-base-384)")
    preset = MedVLConfig.from_preset(args.preset)
    config = MedVLConfig.from_preset(args.preset, **config_overrides(args.model_overrides, preset), **overrides)
    model = MedVLModel.from_pretrained_towers(config, vision_weights=args.src, text_model_path=args.text_model)
    return model, args.text_model, None


def run_convert(args):
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file (give a folder path)")
    if not Path(args.src).exists():
        raise UserError(f"--src {args.src}: no such file or folder (check the path)")
    from transformers import AutoImageProcessor, AutoTokenizer
    try:
        model, tokenizer_source, processor_source = convert(args)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as error:
        return report(error)  # the source does not fit --from / --preset: the converters name what
    model.save_pretrained(out)
    kept = [name for name, loader, source in (("tokenizer", AutoTokenizer, tokenizer_source),
                                              ("image processor", AutoImageProcessor, processor_source))
            if _save_local(name, loader, source, out)]
    if not args.quiet:
        print(f"saved a MedVL model converted from {args.source_format} to {out}"
              + (f" with its {' and '.join(kept)}" if kept else " (no tokenizer found to keep)"))
    return 0


def register(parser):
    parser.add_argument("--from", dest="source_format", choices=FORMATS, required=True,
                        help="clip: a transformers CLIPModel folder; open_clip: an open_clip weight file or Hub-layout "
                             "folder; towers: a timm weight file (and a BERT-style folder) into a --preset")
    parser.add_argument("--src", required=True, help="the source folder or weight file (towers: the timm file)")
    parser.add_argument("--out", required=True, help="output folder of the MedVL model")
    parser.add_argument("--model-name", help="open_clip: the model name of a bare weight file (e.g. ViT-B-16)")
    parser.add_argument("--text-model", help="towers: a BERT-style transformers folder for the text tower")
    parser.add_argument("--preset", help="towers: the MedVL preset to build (e.g. swin-base-384)")
    parser.add_argument("--model-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="MedVL config fields, e.g. lock_vision_tower=true (LiT: the image tower stays frozen in "
                             "pretraining and fine-tuning) or vision_config.image_size=336 (positions resampled)")
    parser.add_argument("--fusion-type", choices=("cross_attention", "merged", "none"),
                        help="the fusion layers added on top (new weights)")
    parser.add_argument("--quiet", action="store_true", help="no summary line")
    parser.set_defaults(func=run_convert)
