"""Rendering one slide's result: the HTML report, overlay and charts (no folder logic)."""
