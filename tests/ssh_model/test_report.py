import base64
import io
import re

import numpy as np
from PIL import Image

from ssh_model.report import ReportRow, render_report, thumbnail


def test_given_a_large_image_when_thumbnailed_then_the_long_side_is_bounded_and_masks_become_rgb():
    rng = np.random.default_rng(0)
    assert thumbnail(rng.integers(0, 256, (600, 300, 3), dtype=np.uint8), 100).shape == (100, 50, 3)
    assert thumbnail(rng.random((40, 80), dtype=np.float32), 100).shape == (40, 80, 3)


def test_given_rows_when_rendered_then_every_image_is_an_inline_jpeg_and_text_is_escaped():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rows = [
        ReportRow("a<1>", {"before": image, "after": image, "mask": rng.random((32, 48))}, {"psnr": 31.5}),
        ReportRow("b", {"before": image}, status="error", note="mask is empty"),
    ]
    page = render_report("Batch <report>", rows, summary={"rows": 2})
    images = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(images) == 4
    decoded = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert decoded.size == (48, 32)
    assert "a&lt;1&gt;" in page and "Batch &lt;report&gt;" in page and "<1>" not in page
    assert "31.500" in page and "mask is empty" in page
