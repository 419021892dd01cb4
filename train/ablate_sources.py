"""Where an ablation cell's towers start (train/ablate.py): fresh initialisation, a general-domain start (a MedVL
folder written by `medvl convert`, or a local timm weight file) or a domain start (a MedVL folder converted from a
domain model such as BiomedCLIP). Every source is checked before any run, with a one-line error naming it.

A MedVL folder carries its own fusion_type. A cell of another fusion_type pretrains from a copy of the folder whose
fusion layers (and the ITM head that reads them) are rebuilt fresh from the folder's config with the cell's
fusion_type; both towers, the projections and the temperature keep the folder's weights. (A converted CLIP or
open_clip folder's fusion layers are new weights anyway; a refusal would force one conversion per fusion_type.)
"""

import json
import logging
from pathlib import Path

FRESH = "fresh init"
CONVERT_HINT = "`medvl convert --from clip|open_clip|towers --src SOURCE --out DIR`"
# Parameters that depend on the fusion_type: not copied into a rebuilt model.
FUSION_PREFIXES = ("medvl.fusion.", "itm_head.")

logger = logging.getLogger("medvl.ablate")


def checked_medvl_folder(option: str, path: str, needs_tokenizer: bool = False) -> Path:
    """`path` as a MedVL model folder, else a one-line error that names the option and the path and says how to fix
    it."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{option} {path}: no such folder (expected a MedVL model folder, e.g. written by "
                                f"{CONVERT_HINT})")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: a file, not a MedVL model folder; convert it with {CONVERT_HINT} and pass "
                         "DIR (a timm weight file for the general vision tower goes to --general_vision_weights)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        kind = "a LoRA adapter folder (merge it into a full model first)" if (
            folder / "adapter_config.json").is_file() else "no config.json"
        raise FileNotFoundError(f"{option} {path}: not a MedVL model folder ({kind}); write one with {CONVERT_HINT}")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "medvl":
        source_format = "clip" if model_type == "clip" else "clip|open_clip|towers"
        raise ValueError(f"{option} {path}: a {model_type!r} model, not a MedVL one; convert it first with "
                         f"`medvl convert --from {source_format} --src {path} --out DIR` and pass DIR")
    if needs_tokenizer and not (folder / "tokenizer_config.json").is_file():
        raise ValueError(f"{option} {path}: holds no tokenizer (tokenizer_config.json), which pretraining its text "
                         "tower needs; convert from a source folder that has one (`medvl convert` keeps it)")
    return folder


def check_sources(args, inits: set) -> None:
    """Every start the grid's cells name exists and fits, before any data is generated or any run starts."""
    if args.general_model and args.general_vision_weights:
        raise ValueError("--general_model and --general_vision_weights both given: choose one general start")
    if args.general_vision_weights and not Path(args.general_vision_weights).is_file():
        raise FileNotFoundError(f"--general_vision_weights {args.general_vision_weights}: no such file")
    if args.general_model:
        checked_medvl_folder("--general_model", args.general_model)
    if args.domain_model:
        checked_medvl_folder("--domain_model", args.domain_model, needs_tokenizer=True)
    if "general" in inits and not (args.general_model or args.general_vision_weights):
        raise ValueError("init=general needs a general-domain start: --general_model DIR (a MedVL folder, e.g. "
                         "`medvl convert --from clip --src CLIP_FOLDER --out DIR`) or --general_vision_weights FILE (a "
                         "local timm weight file); for towers from fresh initialisation use init=random")
    for option, init in (("--general_model", "general"), ("--general_vision_weights", "general"),
                         ("--domain_model", "domain")):
        if getattr(args, option[2:]) and init not in inits:
            raise ValueError(f"{option} is given but the grid has no init={init} cell to use it")
    if args.domain_model_steps is not None and args.domain_model_steps < 0:
        raise ValueError("--domain_model_steps must be >= 0")
    if args.domain_model_steps is not None and not args.domain_model:
        raise ValueError("--domain_model_steps is given without --domain_model")


def cell_source(args, init: str) -> str:
    """The start a cell of `init` names in the results: an absolute path, or 'fresh init'."""
    path = {"general": args.general_model or args.general_vision_weights, "domain": args.domain_model}.get(init)
    return str(Path(path).resolve()) if path else FRESH


def text_length(folder, wanted: int) -> int:
    """`wanted`, or less where the folder's text tower has fewer positions (CLIP: 77)."""
    from modeling_medvl import MedVLConfig

    return min(wanted, MedVLConfig.from_pretrained(str(folder)).text_config.max_position_embeddings)


def with_fusion_type(folder, fusion_type: str, out, seed: int):
    """(the folder to pretrain from, a note): `folder` itself when its fusion_type is the cell's, else `out`: a
    MedVLForPreTraining with the cell's fusion_type whose fusion layers and ITM head are fresh (seeded) and every other
    weight is the folder's."""
    import torch
    from transformers.utils import logging as hf_logging

    from modeling_medvl import MedVLConfig, MedVLForPreTraining

    config = MedVLConfig.from_pretrained(str(folder))
    if config.fusion_type == fusion_type:
        return Path(folder), f"fusion layers from the folder ({fusion_type})"
    source_type = config.fusion_type
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a converted MedVLModel folder has no pretraining heads: expected
    try:
        source = MedVLForPreTraining.from_pretrained(str(folder)).state_dict()
    finally:
        hf_logging.set_verbosity(verbosity)
    config.fusion_type = fusion_type
    if fusion_type == "none":
        config.itm_weight = 0.0
    elif config.itm_weight == 0:
        config.itm_weight = MedVLConfig().itm_weight  # as a fresh cell with fusion layers: ITM on
    config.check_fields()
    torch.manual_seed(seed)
    model = MedVLForPreTraining(config)
    target = model.state_dict()
    kept = {key: value for key, value in source.items() if key in target and not key.startswith(FUSION_PREFIXES)}
    mismatched = [key for key, value in kept.items() if value.shape != target[key].shape]
    if mismatched:
        raise ValueError(f"{folder}: {mismatched[:3]} change shape with fusion_type={fusion_type}")
    model.load_state_dict(kept, strict=False)
    model.save_pretrained(str(out))
    note = f"fusion layers rebuilt fresh for {fusion_type} (the folder has {source_type})"
    logger.info(f"{folder}: {note}; saved in {out}")
    return Path(out), note


__all__ = ["FRESH", "cell_source", "check_sources", "checked_medvl_folder", "text_length", "with_fusion_type"]
