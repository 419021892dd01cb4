"""A side-by-side page of generated reports: each image inline (a base64 PNG, so the file stands alone), its
reference report and the generated one."""

import base64
import html
import io
from pathlib import Path

from PIL import Image

THUMBNAIL = 256

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 0.5em; vertical-align: top; }
td.report { white-space: pre-wrap; max-width: 30em; font-size: 0.9em; }
img { image-rendering: pixelated; }
"""


def png_data_uri(image) -> str:
    """`image` (a PIL image, or a path) as a `data:image/png;base64,...` URI, enlarged to THUMBNAIL px wide."""
    image = Image.open(image) if isinstance(image, (str, Path)) else image
    image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
    if image.width < THUMBNAIL:
        image = image.resize((THUMBNAIL, round(image.height * THUMBNAIL / image.width)), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_examples_html(path, images, references, generated, title="Reference and generated reports") -> Path:
    """Write the page to `path`: one row per study (image, reference, generated); returns `path`."""
    if not len(images) == len(references) == len(generated):
        raise ValueError(f"{len(images)} images, {len(references)} references and {len(generated)} generated "
                         "reports: give one of each per study")
    rows = [
        f'<tr><td>{number}</td><td><img src="{png_data_uri(image)}" alt="study {number}"></td>'
        f'<td class="report">{html.escape(reference)}</td><td class="report">{html.escape(report)}</td></tr>'
        for number, (image, reference, report) in enumerate(zip(images, references, generated), start=1)
    ]
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n<table>\n"
        "<tr><th>#</th><th>image</th><th>reference</th><th>generated</th></tr>\n" + "\n".join(rows)
        + "\n</table>\n</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["png_data_uri", "write_examples_html"]
