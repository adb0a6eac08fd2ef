"""The cost of learning from sign-outs, and (given real labels) what each biopsy buys; prints JSON.

* ``assemble_s``: finding the confirmed, verified results among the folders, one per slide, and
  reading their glomeruli from the slides (crops for ``cnn``, measurements for ``morphometry``);
* ``train_s``: cross-validating and fitting the model as ``lnpath train-lesions --from-results``
  does, written to a temporary folder;
* ``learning_curve`` (``--curve``): a fixed third of the biopsies (at least one) is held out; the
  model is fitted on the first k of the others, k = 1, 2, 4, ... all, and κ / AUC on the held-out
  biopsies are reported per lesion against k.

The figures mean what the labels mean: on results confirmed with scripted calls (as in the tests)
they say nothing about accuracy, only that the loop runs and what it costs.

Usage: ``python scripts/bench_learning.py RESULT_DIR [RESULT_DIR ...] [--method morphometry|cnn]
[--curve] [--slide-root DIR] [--epochs 2] [--size 32] [--mpp 1.0] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import lnpath
from lnpath.training.evaluation import agreement
from lnpath.training.from_results import crops_from_results, measure_results
from lnpath.workflow.learning import confirmed_results


def _assemble(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    start = time.perf_counter()
    results, ignored = confirmed_results(args.results)
    if args.method == "cnn":
        data = crops_from_results(results, ignored, args.mpp, args.size, args.slide_root)
    else:
        data = measure_results(results, ignored, args.slide_root)
    return data, {
        "assemble_s": round(time.perf_counter() - start, 3),
        "confirmed_results": len(results),
        "ignored": {k: len(v) for k, v in ignored.items()},
        "glomeruli": len(data.targets),
        "labels": list(data.labels),
        "refused": data.provenance["refused_labels"],
    }


def _train(data: Any, args: argparse.Namespace) -> float:
    from lnpath.training.calibration import calibrate_morphometry
    from lnpath.training.lesions import train_lesion_model

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        if args.method == "cnn":
            train_lesion_model(data, out, folds=args.folds, epochs=args.epochs)
        else:
            calibrate_morphometry(data, out, folds=args.folds)
    return round(time.perf_counter() - start, 3)


def _fit_predict(data: Any, train: np.ndarray, test: np.ndarray, args: argparse.Namespace) -> Any:
    if args.method == "cnn":
        from lnpath.analysis.lesion_cnn import predict_logits
        from lnpath.nn.lesion_net import LesionNetConfig
        from lnpath.training.lesions import fit

        config = LesionNetConfig(labels=data.labels, input_size=int(data.images.shape[1]))
        net = fit(data.images[train], data.targets[train], config, epochs=args.epochs)
        return 1.0 / (1.0 + np.exp(-predict_logits(net, data.images[test])))
    from lnpath.training.calibration import fit_models, predict_models

    return predict_models(
        fit_models(data.features[train], data.targets[train]), data.features[test]
    )


def _curve(data: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    groups = np.asarray(data.groups).astype(str)
    order = np.random.default_rng(0).permutation(np.unique(groups))
    held = order[: max(1, len(order) // 3)]
    pool = order[len(held) :]
    test = np.isin(groups, held)
    steps = sorted({min(2**i, len(pool)) for i in range(len(pool).bit_length() + 1)} - {0})
    rows = []
    for k in steps:
        train = np.isin(groups, pool[:k])
        p = _fit_predict(data, train, test, args)
        row: dict[str, Any] = {
            "biopsy_groups": k,
            "train_glomeruli": int(train.sum()),
            "held_out_groups": len(held),
            "held_out_glomeruli": int(test.sum()),
        }
        for j, name in enumerate(data.labels):
            y = data.targets[test, j]
            known = ~np.isnan(y)
            figures = agreement(y[known] > 0.5, p[known, j])
            row[name] = {key: round(figures[key], 3) for key in ("kappa", "auc")}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="result folders or folders of them")
    parser.add_argument("--method", choices=("cnn", "morphometry"), default="morphometry")
    parser.add_argument("--curve", action="store_true", help="learning curve on held-out biopsies")
    parser.add_argument("--slide-root")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--mpp", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data, report = _assemble(args)
    report["train_s"] = _train(data, args)
    if args.curve:
        report["learning_curve"] = _curve(data, args)
    report.update(
        method=args.method,
        lnpath=lnpath.__version__,
        machine=platform.machine(),
        threads=args.threads,
        note="the figures mean what the confirmed labels mean; scripted calls say nothing "
        "about accuracy",
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
