"""Whole-slide images: open a slide (OpenSlide), find its tissue, tile it at a µm/px."""
