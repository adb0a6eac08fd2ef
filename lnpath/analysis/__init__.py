"""From a slide to measurements and calls: segmentation, glomerulus measurements, cortex and
lesion callers. Everything here is a machine proposal."""
