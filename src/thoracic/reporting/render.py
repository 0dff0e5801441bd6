"""Rendering sections to Markdown and to one self-contained HTML file (Jinja2 templates in
``thoracic/reporting/templates``; figures embedded as WebP, or JPEG where Pillow lacks WebP).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from thoracic.evaluation.formatting import markdown_table, table_cells
from thoracic.reporting.document import Section


def _environment(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("thoracic.reporting", "templates"),
                             autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["cells"] = table_cells
    env.filters["markdown_table"] = markdown_table
    env.filters["paragraphs"] = lambda text: [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return env


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()


def render_markdown(sections: Sequence[Section], title: str, out_dir: Path) -> str:
    """``report.md``: figures linked by their path relative to ``out_dir``."""
    return _environment(autoescape=False).get_template("report.md.j2").render(
        title=title, sections=sections, generated=datetime.now().isoformat(timespec="seconds"),
        link=lambda path: _relative(path, Path(out_dir)))


#: Longest side of a figure embedded in the HTML (pixels); larger figures are downscaled.
EMBED_MAX_SIDE = 2000


#: WebP quality of embedded figures (sharp lines and text at a fraction of the PNG's size).
EMBED_QUALITY = 85


def embed_image(path: str | Path, max_side: int = EMBED_MAX_SIDE, quality: int = EMBED_QUALITY) -> str:
    """A ``data:`` URI of the figure, re-encoded as WebP (JPEG where Pillow has no WebP support)."""
    from PIL import Image, features

    with Image.open(path) as image:
        image = image.convert("RGB")  # matplotlib figures are opaque
        scale = max_side / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        buffer = io.BytesIO()
        if features.check("webp"):
            image.save(buffer, format="WEBP", quality=quality, method=4)
            mime = "image/webp"
        else:
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def render_html(sections: Sequence[Section], title: str) -> str:
    """``report.html``: one self-contained file (figures embedded, no script, no external resource)."""
    return _environment(autoescape=True).get_template("report.html.j2").render(
        title=title, sections=sections, generated=datetime.now().isoformat(timespec="seconds"), embed=embed_image)


__all__ = ["EMBED_MAX_SIDE", "EMBED_QUALITY", "embed_image", "markdown_table", "render_html", "render_markdown", "table_cells"]
