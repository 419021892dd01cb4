"""Contact sheets: sample images next to their wrapped report text, as one PNG to look at."""

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .anatomy import LOBE_NAMES
from .generator import generate_synthcxr


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(samples, columns=4, tile=256):
    """An RGB image of (title, PIL image, report text) samples: each image with its report beside it."""
    samples = list(samples)
    if not samples:
        raise ValueError("contact_sheet needs at least one sample")
    text_width, margin = int(tile * 1.25), 8
    cell_w, cell_h = tile + text_width + 2 * margin, tile + 2 * margin
    rows = (len(samples) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font_size = max(9, tile // 22)
    font, title_font = _font(font_size), _font(font_size + 2)
    chars = max(20, int(text_width / (font_size * 0.55)))
    line_height = font_size + 3
    for number, (title, image, report) in enumerate(samples):
        x0, y0 = (number % columns) * cell_w + margin, (number // columns) * cell_h + margin
        sheet.paste(image.convert("RGB").resize((tile, tile), Image.BILINEAR), (x0, y0))
        tx = x0 + tile + margin
        draw.text((tx, y0), title, fill=(255, 214, 102), font=title_font)
        y = y0 + line_height + 4
        for paragraph in report.splitlines():
            for line in textwrap.wrap(paragraph, chars) or [""]:
                if y + line_height > y0 + tile:
                    break
                draw.text((tx, y), line, fill=(225, 225, 225), font=font)
                y += line_height
    return sheet


def _summary(study):
    if not study.findings:
        return "normal"
    parts = []
    for f in study.findings:
        name = f.device if f.kind == "support_device" else f.kind
        where = f.location if f.location in LOBE_NAMES else f.side
        parts.append(f"{name}{'?' if f.uncertain else ''}{f' ({where})' if where else ''}")
    return ", ".join(parts)


def synthetic_samples(n, size=256, seed=0, **options):
    """(title, image, report) for the first `n` SynthCXR studies."""
    for study in generate_synthcxr(n, size=size, seed=seed, **options):
        yield f"#{study.index} {study.view}: {_summary(study)}", study.image, study.report


def dataset_samples(data_dir, n):
    """(title, image, report) from a data set on disk: a SynthCXR output folder, or a
    MIMIC-CXR-JPG or Open-I folder, read with the project's readers."""
    from processing.readers import load_mimic_cxr, load_openi

    data_dir = Path(data_dir)
    candidates = [data_dir, data_dir / "mimic-cxr-jpg", data_dir / "openi"]
    for folder in candidates:
        if any(folder.glob("mimic-cxr-2.0.0-metadata.csv*")):
            rows = load_mimic_cxr(folder)
            return [
                (f"{r['study_id']} {r['view']} ({r['split']})", r["image"], r["report"])
                for r in rows.select(range(min(n, len(rows))))
            ]
        if (folder / "ecgen-radiology").is_dir():
            rows = load_openi(folder)
            return [
                (f"{r['report_id']} {r['image_id']}", r["image"], r["report"])
                for r in rows.select(range(min(n, len(rows))))
            ]
    raise FileNotFoundError(
        f"no MIMIC-CXR-JPG (mimic-cxr-2.0.0-metadata.csv) or Open-I (ecgen-radiology/) data under {data_dir}"
    )


__all__ = ["contact_sheet", "dataset_samples", "synthetic_samples"]
