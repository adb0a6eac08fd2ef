"""A slide described as plain data: metadata, pyramid levels, µm/px and its source, tissue."""

from __future__ import annotations

from typing import Any

from lnpath.wsi.slide import Slide
from lnpath.wsi.tissue import detect_tissue


def describe_slide(slide: Slide) -> dict[str, Any]:
    """Everything ``lnpath info`` shows, as JSON-ready data (also its ``--json`` output)."""
    tissue = detect_tissue(slide)
    props = slide.properties
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "objective_power": props.get("openslide.objective-power"),
        "bounds": list(slide.bounds) if slide.bounds else None,
        "associated_images": slide.associated_images,
        "levels": [
            {
                "level": i,
                "dimensions": list(slide.level_dimensions[i]),
                "downsample": slide.level_downsamples[i],
                "mpp": slide.level_mpp(i),
                "tile_size": list(t) if (t := slide.native_tile_size(i)) else None,
            }
            for i in range(slide.level_count)
        ],
        "tissue": {
            "area_mm2": round(tissue.area_mm2, 4),
            "pieces": tissue.n_components,
            "detection_mpp": tissue.mpp,
        },
        "fingerprint": slide.fingerprint(),
    }
