"""The named scoring presets, in a module of their own so that the command line can list them
(every ``--help``) without importing the configuration's dataclasses."""

from __future__ import annotations

from typing import Any

#: Named alternatives from the specification (§1.4, §1.5, §2.3).
PRESETS: dict[str, dict[str, Any]] = {
    "viable_denominator": {"glomerular_denominator": "non_globally_sclerosed"},
    "nonscarred_inflammation": {"interstitial_inflammation_region": "nonscarred_cortex"},
    "adhesion_as_sclerosis": {"adhesion_as_sclerosis": True},
    "isnrps_10": {"adequacy": {"adequate": 10, "limited": 8}},
    "oxford_8": {"adequacy": {"adequate": 8, "limited": 8}},
    # Seema 2013 scored biopsies with *more than* five glomeruli (spec §2.3)
    "permissive_5": {"adequacy": {"adequate": 6, "limited": 6}},
    "legacy_2003": {"class_nomenclature": "legacy_2003"},
}
