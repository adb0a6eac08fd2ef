"""Files at the edge: atomic writes, locks, QuPath GeoJSON, findings tables, config files.

No torch and no slides here: readers turn files into the plain data the pure floors take.
"""
