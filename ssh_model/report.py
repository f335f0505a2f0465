"""A self-contained HTML before/after report: one row per item, thumbnails inlined as JPEG.

Pure: takes arrays and numbers, returns an HTML string; the caller decides where it goes.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ssh_model.images import encode_image

THUMB_SIDE = 224


@dataclass(frozen=True)
class ReportRow:
    id: str
    images: dict[str, np.ndarray | None]  # column name -> (H, W, 3) uint8 or (H, W) mask in [0, 1]
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    note: str = ""


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Downscale so the long side is at most ``side``; masks (H, W) become gray RGB."""
    if image.ndim == 2:
        image = np.repeat(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    pil = Image.fromarray(image)
    pil.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _img_tag(image: np.ndarray, alt: str) -> str:
    data = base64.b64encode(encode_image(thumbnail(image), "JPEG", quality=85)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'


def render_report(title: str, rows: Sequence[ReportRow], summary: dict[str, object] | None = None) -> str:
    """An HTML page with a summary table and one row of thumbnails per item."""
    columns = list(dict.fromkeys(name for row in rows for name in row.images))
    metric_names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["id", "status", *columns, *metric_names])
    body = []
    for row in rows:
        cells = [f"<td>{html.escape(row.id)}</td>"]
        status = html.escape(row.status) + (f"<br><small>{html.escape(row.note)}</small>" if row.note else "")
        cells.append(f'<td class="{html.escape(row.status)}">{status}</td>')
        for column in columns:
            image = row.images.get(column)
            cells.append(f"<td>{_img_tag(image, f'{row.id} {column}') if image is not None else ''}</td>")
        cells += [f"<td>{row.metrics[m]:.3f}</td>" if m in row.metrics else "<td></td>" for m in metric_names]
        body.append("<tr>" + "".join(cells) + "</tr>")
    summary_html = ""
    if summary:
        items = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
        summary_html = f"<table class=summary>{items}</table>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px; text-align: center; }}
img {{ display: block; max-width: {THUMB_SIDE}px; }} .error {{ color: #b00; }} .skipped {{ color: #777; }}
table.summary {{ margin-bottom: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{summary_html}
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
