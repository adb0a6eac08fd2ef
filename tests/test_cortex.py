"""Cortex measurements on real tiles: stains, fibrosis on collagen stains only, infiltrates."""

from __future__ import annotations

from pathlib import Path

import pytest

import lnpath
from lnpath.analysis.cortex import STAINS, CortexMeasurement, measure_cortex, normalise_stain
from lnpath.analysis.glomeruli import Glomeruli
from lnpath.core.errors import InputError

TILE_MPP = 0.5  # scale not stored for these tiles; ~20x-equivalent


def _tile(path: Path) -> tuple[lnpath.Slide, Glomeruli]:
    slide = lnpath.open_slide(path, mpp=TILE_MPP)
    return slide, Glomeruli([], slide.mpp, "none")


@pytest.fixture(scope="module")
def multistain(data_dir: Path) -> Path:
    return data_dir / "multistain-kidney-tiles"


def test_stain_names() -> None:
    assert normalise_stain("masson") == "trichrome"
    assert normalise_stain("PASM") == "silver"
    assert normalise_stain("he") == "HE"
    assert {normalise_stain(s) for s in STAINS} == set(STAINS)
    with pytest.raises(InputError, match="unknown stain 'giemsa'"):
        normalise_stain("giemsa")


def test_fibrosis_is_not_assessed_on_pas(multistain: Path) -> None:
    c = measure_cortex(*_tile(multistain / "orig_patch_stain_02.png"), stain="PAS")
    assert isinstance(c, CortexMeasurement)
    assert c.fractions() == {
        "interstitial_inflammation": None,
        "interstitial_fibrosis": None,
        "tubular_atrophy": None,
    }
    d = c.to_dict()
    assert "PAS does not stain collagen" in d["not_assessed"]["interstitial_fibrosis"]
    assert "not validated" in d["not_assessed"]["interstitial_inflammation"]
    assert d["medulla_excluded"] is False
    assert 0.1 < c.tissue_area_mm2 <= 0.25  # a 1000 px tile at 0.5 µm/px covers 0.25 mm²
    assert c.inflammation_fraction is not None and 0 <= c.inflammation_fraction < 0.2


def test_sirius_red_collagen_is_measured_and_specific(multistain: Path) -> None:
    sirius = measure_cortex(*_tile(multistain / "orig_patch_stain_32.png"), stain="sirius_red")
    assert sirius.fibrosis_fraction is not None and 0.05 < sirius.fibrosis_fraction < 0.6
    assert sirius.fractions()["interstitial_fibrosis"] == sirius.fibrosis_fraction
    # a PAS section read as if it were Sirius red shows almost no red collagen
    pas = measure_cortex(*_tile(multistain / "orig_patch_stain_02.png"), stain="sirius_red")
    assert pas.fibrosis_fraction is not None and pas.fibrosis_fraction < 0.02


def test_silver_does_not_measure_inflammation(multistain: Path) -> None:
    c = measure_cortex(*_tile(multistain / "orig_patch_stain_03.png"), stain="silver")
    assert c.inflammation_fraction is None and c.fibrosis_fraction is None
    assert "silver" in c.to_dict()["not_assessed"]["interstitial_inflammation"]


def test_dense_nuclei_read_as_infiltrate(data_dir: Path) -> None:
    tiles = data_dir / "tissue-detection-tiles"
    high = measure_cortex(*_tile(tiles / "high-nuclei-score-level0.png"), stain="HE")
    low = measure_cortex(*_tile(tiles / "medium-nuclei-score-level0.png"), stain="HE")
    assert high.inflammation_fraction is not None and low.inflammation_fraction is not None
    assert high.inflammation_fraction > low.inflammation_fraction + 0.1


def test_glomeruli_are_excluded_from_the_interstitium(repo_dir: Path) -> None:
    slide = lnpath.open_slide(repo_dir / "examples" / "demo_biopsy.tiff")
    glomeruli = Glomeruli.from_geojson(
        repo_dir / "examples" / "demo_biopsy_glomeruli.geojson", slide.mpp
    )
    c = measure_cortex(slide, glomeruli, stain="PAS")
    polygon_mm2 = sum(g.area_um2 for g in glomeruli) / 1e6
    # tissue inside the outlines: the polygons minus open lumina and Bowman's space
    assert 0.5 * polygon_mm2 < c.glomerular_area_mm2 <= polygon_mm2
    assert c.glomerular_area_mm2 < c.tissue_area_mm2


def test_no_tissue_is_an_error(data_dir: Path) -> None:
    with pytest.raises(InputError, match="no tissue"):
        measure_cortex(*_tile(data_dir / "tissue-detection-tiles" / "no-tissue.png"), stain="PAS")


def test_only_tiles_with_tissue_are_read(slides_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Glass is skipped (a needle biopsy on a large slide must not cost the whole slide), and
    skipping it changes nothing measured."""
    import numpy as np

    import lnpath.analysis.cortex as cortex
    from lnpath.wsi.tissue import TissueMask, detect_tissue

    slide = lnpath.open_slide(slides_dir / "cmu-1-small-region.svs")
    detected = detect_tissue(slide)
    everywhere = TissueMask(np.ones_like(detected.mask), mpp=detected.mpp, slide_mpp=slide.mpp)
    reads: list[int] = []
    original = cortex.tissue_mask

    def counting(od: np.ndarray, mpp: float) -> np.ndarray:
        reads[-1] += 1
        return original(od, mpp)

    monkeypatch.setattr(cortex, "tissue_mask", counting)
    results = []
    for mask in (detected, everywhere):
        reads.append(0)
        results.append(measure_cortex(slide, [], tissue=mask))
    assert reads[0] < reads[1]
    assert results[0].tissue_area_mm2 == results[1].tissue_area_mm2 > 0
    assert results[0].inflammation_fraction == results[1].inflammation_fraction
