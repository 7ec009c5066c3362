"""How the reciprocam+ preset was chosen: candidate taps and their sums on tuning streams, on one or more models.

    python benchmarks/preset_study.py [--n 100] [--n-two N] [--seed 4000037 --seed 4000039 ...]
        [--model models/shapes_vit.onnx --model models/shapes_vit_stem52.onnx] [--only NAME --only ...]
        [--weigh "NAME=0.5,1,2" ...] [--adcc K] [--gamma G] [--out FILE.json]

Each candidate is one tap (an option set of the Explainer; ``--only`` keeps the
ones named). On ``--n`` shapes images of each stream ``--seed`` (one object
each) and ``--n-two`` (default ``--n``) two-object images of the same streams,
it computes every candidate's maps for the true
labels (both classes on two-object images), then scores every candidate and
every sum of two or three candidates (min-max normalised again) or, with
``--weigh``, every weighting of the sum of all candidates studied (each
candidate named in a ``--weigh`` takes every weight listed, 0 leaving it out, the others 1): pointing
game (PG), energy pointing game (EPG) and the discriminative pointing game of
each class (DPG-A, DPG-B), on every model given, pooled over the streams.
A row's worst is the lowest of its PG, DPG-A and DPG-B on one model; rows are
ranked by the mean of their worsts over the models, then by the lowest of
them. ``--adcc K`` adds, for the ``K`` best rows and for the shipped preset, the
faithfulness metrics on the one-object images of each model (AD, Coh, Com,
ADCC, as `reciprocam eval` computes them; coherency explains each explanation
image again with the row's taps), with the maps raised to ``--gamma`` (the
shipped preset: its own). The power moves no peak, so it changes none of the
pointing games. The streams must be ones that no reported
figure uses: the preset is then reported on held-out images with
`reciprocam eval` (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reciprocam_onnx import Explainer, Options  # noqa: E402
from reciprocam_onnx.engine.taps import MultiTapExplainer, combine_maps  # noqa: E402
from reciprocam_onnx.evaluation import EvalModel, shapes_dataset  # noqa: E402
from reciprocam_onnx.evaluation.methods import PLUS  # noqa: E402
from reciprocam_onnx.evaluation.metrics import energy_pointing_game, explanation_metrics, pointing_game  # noqa: E402
from reciprocam_onnx.options import PRESETS  # noqa: E402

CANDIDATES = {  # name: block, then what differs from the paper (3x3 window kept, residual unmasked, softmax)
    "paper": dict(block=-2),
    "b-2 masked": dict(block=-2, residual="masked"),
    "b-2 masked logits": dict(block=-2, residual="masked", score="logits"),
    "b-3 masked logits": dict(block=-3, residual="masked", score="logits"),
    "b-1 masked 1x1 logits": dict(block=-1, residual="masked", kernel="1x1", score="logits"),
    "b-2 masked 1x1 logits": dict(block=-2, residual="masked", kernel="1x1", score="logits"),
    "b-3 masked 1x1 logits": dict(block=-3, residual="masked", kernel="1x1", score="logits"),
    "b-1 logits": dict(block=-1, score="logits"),
    "b-1 removed": dict(block=-1, window="removed"),
    "b-1 removed logits": dict(block=-1, window="removed", score="logits"),
    "b-2 removed logits": dict(block=-2, window="removed", score="logits"),
    "b-2 masked removed logits": dict(block=-2, residual="masked", window="removed", score="logits"),
    "b-3 masked removed logits": dict(block=-3, residual="masked", window="removed", score="logits"),
}


def candidate_maps(
    model: Path, names: list[str], n: int, n_two: int, seeds: list[int]
) -> tuple[dict[str, tuple[np.ndarray, ...]], list, list]:
    """name -> (maps of single-object images, of two-object images' first and second class); the datasets
    (``n`` and ``n_two`` images of each stream in ``seeds``)."""
    info = Explainer(model).info
    size, mean, std = info.input_shape[1:], info.model.mean, info.model.std
    single = [item for seed in seeds for item in shapes_dataset(n, seed, size, mean, std)]
    two = [item for seed in seeds for item in shapes_dataset(n_two, seed, size, mean, std, two_objects=True)]
    x1, x2 = np.stack([item.tensor for item in single]), np.stack([item.tensor for item in two])
    labels = np.array([item.label for item in single])
    pairs = np.array([item.two_classes() for item in two])
    maps = {}
    for name in names:
        explainer = Explainer(model, **CANDIDATES[name])
        every1, every2 = explainer.explain_all(x1), explainer.explain_all(x2)
        rows1, rows2 = np.arange(len(single)), np.arange(len(two))
        maps[name] = (every1[rows1, labels], every2[rows2, pairs[:, 0]], every2[rows2, pairs[:, 1]])
        print(f"maps of {name}", file=sys.stderr)
    return maps, single, two


@functools.cache
def eval_model(model: Path) -> EvalModel:
    """The model's softmax scores, as `reciprocam eval` computes them (one per model)."""
    return EvalModel(model)


def faithfulness(
    model: Path, taps: tuple[str, ...], weights: tuple[float, ...], gamma: float, maps: np.ndarray, single: list
) -> dict[str, float]:
    """AD, Coh, Com and ADCC of the weighted sum of ``taps`` raised to ``gamma`` (its ``maps`` of the
    one-object images ``single``)."""
    explainer = MultiTapExplainer(model, [Options(**CANDIDATES[name]) for name in taps], weights=weights, gamma=gamma)
    images, labels = np.stack([item.tensor for item in single]), np.array([item.label for item in single])
    found = explanation_metrics(
        eval_model(model).score_fn, images, maps, labels, 16, explain_fn=lambda x, t: explainer.explain(x, t).maps
    )
    return {"AD": found["average_drop"], "Coh": found["coherency"], "Com": found["complexity"], "ADCC": found["adcc"]}


def scores(
    parts: list[tuple[np.ndarray, ...]], weights: tuple[float, ...], single: list, two: list
) -> dict[str, float]:
    """PG, EPG, DPG-A, DPG-B of the min-max normalised weighted sum of ``parts``."""
    one, first, second = (combine_maps([p[k] for p in parts], weights) for k in range(3))
    size = single[0].image_rgb.shape[:2]
    return {
        "PG": float(np.mean([pointing_game(m, it.box_for(it.label), size) for m, it in zip(one, single)])),
        "EPG": float(np.mean([energy_pointing_game(m, it.box_for(it.label), size) for m, it in zip(one, single)])),
        "DPG-A": float(np.mean([pointing_game(m, it.box_for(it.two_classes()[0]), size) for m, it in zip(first, two)])),
        "DPG-B": float(
            np.mean([pointing_game(m, it.box_for(it.two_classes()[1]), size) for m, it in zip(second, two)])
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n-two", type=int, default=None, help="two-object images per stream (default --n)")
    parser.add_argument("--only", action="append", choices=CANDIDATES, help="candidates to study (default all)")
    parser.add_argument("--weigh", action="append", default=[], metavar="NAME=W,W", help="weights of a candidate")
    parser.add_argument("--adcc", type=int, default=0, metavar="K", help="faithfulness of the K best rows")
    parser.add_argument("--gamma", type=float, default=1.0, help="power of the maps scored for faithfulness")
    parser.add_argument("--seed", type=int, action="append", help="tuning stream, repeatable (default 4000037)")
    parser.add_argument("--model", type=Path, action="append", help="repeat for several (default: the demo model)")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON")
    args = parser.parse_args()
    models = args.model or [ROOT / "models" / "shapes_vit.onnx"]
    seeds = args.seed or [4000037]
    names = args.only or list(CANDIDATES)
    if args.weigh:
        grid = {name: [1.0] for name in names} | {
            name: [float(w) for w in weights.split(",")] for name, weights in (x.split("=") for x in args.weigh)
        }
        weighings = [zip(names, weights) for weights in itertools.product(*(grid[name] for name in names))]
        combos = [tuple(zip(*[(n, w) for n, w in pairs if w])) for pairs in weighings]  # weight 0: left out
    else:
        combos = [(c, (1.0,) * size) for size in (1, 2, 3) for c in itertools.combinations(names, size)]
    preset = PRESETS[PLUS]
    shipped = tuple(next(name for name, options in CANDIDATES.items() if options == tap) for tap in preset.taps)
    if set(shipped) <= set(names) and not any(taps == shipped and w == preset.tap_weights() for taps, w in combos):
        combos.append((shipped, preset.tap_weights()))
    per_model, data = [], []
    for model in models:
        maps, single, two = candidate_maps(model, names, args.n, args.n_two or args.n, seeds)
        per_model.append([scores([maps[name] for name in taps], w, single, two) for taps, w in combos])
        data.append((maps, single))
    rows = []
    for k, (taps, weights) in enumerate(combos):
        worsts = [min(found[k]["PG"], found[k]["DPG-A"], found[k]["DPG-B"]) for found in per_model]
        rows.append(
            {
                "taps": taps,
                "weights": weights,
                "shipped": taps == shipped and weights == preset.tap_weights(),
                "mean_worst": float(np.mean(worsts)),
                "lowest_worst": min(worsts),
                "models": [found[k] for found in per_model],
            }
        )
    rows.sort(key=lambda row: (-row["mean_worst"], -row["lowest_worst"]))
    for row in rows[: args.adcc] + [row for row in rows[args.adcc :] if args.adcc and row["shipped"]]:
        gamma = preset.gamma if row["shipped"] else args.gamma
        for model, (maps, single), found in zip(models, data, row["models"]):
            one = combine_maps([maps[name][0] for name in row["taps"]], row["weights"], gamma)
            found.update(faithfulness(model, row["taps"], row["weights"], gamma, one, single))
    keys = ("PG", "EPG", "DPG-A", "DPG-B")
    print("models: " + ", ".join(f"{k + 1} = {model}" for k, model in enumerate(models)) + f"; streams {seeds}")
    print(
        "| taps | mean worst | "
        + " | ".join(f"{key} ({k + 1})" for k in range(len(models)) for key in keys)
        + " |\n"
        + "|---" * (2 + len(keys) * len(models))
        + "|"
    )
    for row in rows[:20] + [row for row in rows[20:] if row["shipped"] or row["taps"] == ("paper",)]:
        cells = [f"{m[key]:.2f}" for m in row["models"] for key in keys]
        print(f"| {label(row)} | {row['mean_worst']:.3f} | " + " | ".join(cells) + " |")
    measured = [row for row in rows if "ADCC" in row["models"][0]]
    if measured:
        faithful = ("AD", "Coh", "Com", "ADCC")
        print(
            "\n| taps | "
            + " | ".join(f"{key} ({k + 1})" for k in range(len(models)) for key in (*keys, *faithful))
            + " |\n"
            + "|---" * (1 + len(keys + faithful) * len(models))
            + "|"
        )
        for row in measured:
            cells = [f"{m[key]:.3f}" for m in row["models"] for key in (*keys, *faithful)]
            print(f"| {label(row)} | " + " | ".join(cells) + " |")
    if args.out:
        models_run = [str(m) for m in models]
        found = {"n": args.n, "n_two": args.n_two or args.n, "seeds": seeds, "models": models_run, "rows": rows}
        args.out.write_text(json.dumps(found, indent=1))


def label(row: dict) -> str:
    """The row's taps, each with its weight where not 1; the shipped preset's marked."""
    taps = " + ".join(name if w == 1 else f"{w:g} x {name}" for name, w in zip(row["taps"], row["weights"]))
    return f"**{taps}** (shipped, gamma {PRESETS[PLUS].gamma:g})" if row["shipped"] else taps


if __name__ == "__main__":
    main()
