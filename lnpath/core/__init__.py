"""Floor 0: the vocabulary every other room shares (errors, lesion names, findings rules).

Pure Python, numpy and pandas only: no files beyond what a caller hands in, no torch, no slides.
"""
