"""Train the small demo ViT on the synthetic shapes dataset and export it to ONNX.

Usage::

    python export/train_demo.py --out models/ --seed 0

The model is a timm ``VisionTransformer`` (class token, token pooling, standard
pre-norm blocks) whose patch embedding is a small convolutional stem producing
the usual 14x14 token grid. Training adds a training-only linear head that
classifies every patch token (object class or background, taken from the
generated masks); without that dense signal the ViT stays near chance for
thousands of steps. Every batch is freshly generated (seeded per sample), with a
curriculum that starts with large objects on a plain background and ramps in
clutter and small objects; AdamW with warm-up and cosine decay over a fixed
number of steps, fixed seeds and a fixed thread count, so the defaults
reproduce the shipped model.

Writes ``<out>/shapes_vit.onnx``, ``<out>/manifest.json``, example images and a
log file.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reciprocam_onnx.evaluation.shapes import (  # noqa: E402
    CLASS_NAMES,
    ShapeSample,
    make_sample,
    make_two_object_sample,
)

TRAINING_LOG = Path(__file__).resolve().parents[1] / "docs" / "demo-model-training.log"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
HELDOUT_SEED = 1_000_003
VALID_SEED = 2_000_003
EXAMPLE_SEED = 3_000_003
EXAMPLE_CLASSES = ("circle", "triangle", "star", "ring", "arrow", "crescent")
MODEL_NAME = "shapes-vit"
MODEL_FILE = "shapes_vit.onnx"
THREADS = 2  # fixed so that runs reproduce
BACKGROUND = len(CLASS_NAMES)  # extra class of the training-only token head

log = logging.getLogger("train_demo")


@dataclass(frozen=True)
class Config:
    """Training hyper-parameters."""

    seed: int = 0
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    curriculum: float = 0.2  # fraction of steps over which clutter/small objects ramp in
    embed_dim: int = 128
    depth: int = 4
    heads: int = 4
    heldout_n: int = 2000
    token_weight: float = 1.0  # weight of the training-only per-token loss
    label_smoothing: float = 0.0  # 0.1 caps every confident score near 0.91, flattening masked-copy scores
    stem: int = 84  # receptive field of the conv stem in pixels: 84 (shipped) or 52 (its last 3x3 conv left out)


STEMS = (84, 52)  # receptive fields of the conv stems, in pixels


class ConvStemPatchEmbed(PatchEmbed):
    """timm ``PatchEmbed`` whose projection is a stride-16 conv stem.

    A 4x4 stride-4 conv (56x56), a 3x3 conv, then two stages of [3x3 stride-2
    conv, 3x3 conv] (28x28, 14x14), each conv + BatchNorm + ReLU, and a 1x1 conv
    to the embedding width: the usual 14x14 token grid. Its receptive field
    (~84 px) covers most objects, so the patch tokens already carry shape
    information. ``stem=52`` leaves out the last 3x3 conv (receptive field 52 px).
    """

    def __init__(self, *args: object, stem: int = STEMS[0], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if stem not in STEMS:
            raise SystemExit(f"--stem must be one of {', '.join(map(str, STEMS))}, not {stem}")
        in_chans = self.proj.in_channels
        embed_dim = self.proj.out_channels
        last = _conv_bn_relu(128, 128, kernel=3, stride=1, padding=1) if stem == 84 else []
        self.proj = nn.Sequential(
            *_conv_bn_relu(in_chans, 32, kernel=4, stride=4, padding=0),
            *_conv_bn_relu(32, 48, kernel=3, stride=1, padding=1),
            *_conv_bn_relu(48, 96, kernel=3, stride=2, padding=1),
            *_conv_bn_relu(96, 96, kernel=3, stride=1, padding=1),
            *_conv_bn_relu(96, 128, kernel=3, stride=2, padding=1),
            *last,
            nn.Conv2d(128, embed_dim, 1),
        )


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    """Conv (no bias) + BatchNorm + ReLU."""
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def build_model(cfg: Config) -> VisionTransformer:
    """The demo ViT: conv-stem patch embedding, class token, ``depth`` pre-norm blocks."""
    return VisionTransformer(
        img_size=INPUT_SIZE,
        patch_size=16,
        num_classes=len(CLASS_NAMES),
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.heads,
        mlp_ratio=4.0,
        class_token=True,
        global_pool="token",
        embed_layer=functools.partial(ConvStemPatchEmbed, stem=cfg.stem),
    )


def describe(cfg: Config) -> str:
    """One-line architecture description (manifest and ONNX metadata)."""
    return (
        f"timm VisionTransformer: conv stem (4x4/4 conv 32, 3x3 conv 48, 3x3/2 conv 96, 3x3 conv 96, "
        f"3x3/2 conv 128{', 3x3 conv 128' if cfg.stem == 84 else ''}, each +BN+ReLU, 1x1 conv; receptive field "
        f"{cfg.stem} px) -> 14x14 tokens, "
        f"class token, {cfg.depth} pre-norm blocks, width {cfg.embed_dim}, {cfg.heads} heads, "
        f"MLP ratio 4, CLS-token head, {len(CLASS_NAMES)} classes"
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> normalised (N, 3, H, W) float32."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def curriculum(progress: float, ramp: float) -> dict[str, float]:
    """Generation settings at training ``progress`` (0-1): mild clutter and big objects first."""
    t = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return {"clutter": t, "min_scale": 56 - 28 * t}


def token_labels(sample: ShapeSample, patch: int = 16, min_cover: float = 0.2) -> np.ndarray:
    """Per-patch targets: the object's class where it covers >= ``min_cover`` of the patch, else background."""
    grid = INPUT_SIZE // patch
    cover = sample.mask.reshape(grid, patch, grid, patch).mean(axis=(1, 3)).ravel()
    return np.where(cover >= min_cover, sample.label, BACKGROUND)


def make_batch(seed: int, start: int, n: int, **kwargs: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples ``start .. start+n-1`` of stream ``seed`` as (inputs, labels, per-token labels)."""
    samples = [make_sample(np.random.default_rng([seed, i]), **kwargs) for i in range(start, start + n)]
    images = np.stack([s.image for s in samples])
    labels = torch.tensor([s.label for s in samples])
    tokens = torch.from_numpy(np.stack([token_labels(s) for s in samples]))
    return to_tensor(images), labels, tokens


def lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps times a cosine decay over ``progress`` (0-1)."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, seed: int, n: int, device: str, chunk: int = 100) -> float:
    """Accuracy on ``n`` full-difficulty samples of stream ``seed``."""
    model.eval()
    correct = 0
    for start in range(0, n, chunk):
        x, y, _ = make_batch(seed, start, min(chunk, n - start))
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train()
    return correct / n


class BatchStream(torch.utils.data.Dataset):
    """Training batch ``step`` of the run (freshly generated, seeded per sample, curriculum applied).

    A dataset of whole batches, so that a ``DataLoader`` with worker processes
    generates the same batches as the main process would.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        return make_batch(cfg.seed, step * cfg.batch, cfg.batch, **curriculum(step / cfg.steps, cfg.curriculum))


def train(model: VisionTransformer, cfg: Config, device: str, workers: int = 0) -> int:
    """AdamW with warm-up + cosine schedule over ``cfg.steps`` freshly generated batches; returns the steps taken.

    Besides the CLS-token loss, a training-only linear head classifies every
    patch token (object class or background, from the masks); this dense
    signal is what gets the ViT off chance level quickly.
    """
    token_head = nn.Linear(cfg.embed_dim, len(CLASS_NAMES) + 1).to(device)
    params = list(model.parameters()) + list(token_head.parameters())
    optimiser = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    model.train()
    model.patch_embed.to(memory_format=torch.channels_last)  # faster conv stem on CPU
    started = time.time()
    running_loss, running_acc = 2.3, 0.1
    batches = torch.utils.data.DataLoader(BatchStream(cfg), batch_size=None, num_workers=workers)
    for step, (x, y, tokens) in enumerate(batches):
        done = step / cfg.steps
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, done, cfg.warmup)
        features = model.forward_features(x.to(device).contiguous(memory_format=torch.channels_last))
        logits = model.forward_head(features)
        token_logits = token_head(features[:, model.num_prefix_tokens :])
        loss = F.cross_entropy(logits, y.to(device), label_smoothing=cfg.label_smoothing)
        loss = loss + cfg.token_weight * F.cross_entropy(token_logits.flatten(0, 1), tokens.to(device).flatten())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        running_loss = 0.95 * running_loss + 0.05 * loss.item()
        running_acc = 0.95 * running_acc + 0.05 * (logits.argmax(1).cpu() == y).float().mean().item()
        if (step + 1) % 25 == 0:
            log.info(
                "step %d progress %.3f loss %.3f acc %.3f lr %.2e %.1f min",
                step + 1,
                done,
                running_loss,
                running_acc,
                optimiser.param_groups[0]["lr"],
                (time.time() - started) / 60,
            )
        if (step + 1) % 250 == 0 or step + 1 == cfg.steps:
            log.info("step %d validation acc %.3f (300 images)", step + 1, evaluate(model, VALID_SEED, 300, device))
    return cfg.steps


def export_onnx(model: nn.Module, path: Path, cfg: Config) -> None:
    """Export to ONNX (opset 17, dynamic batch), add metadata and check it against torch."""
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    dummy = make_batch(VALID_SEED, 0, 4)[0]
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    metadata = {
        "labels": list(CLASS_NAMES),
        "mean": list(MEAN),
        "std": list(STD),
        "input_size": [INPUT_SIZE, INPUT_SIZE],
        "description": f"Demo shapes classifier. {describe(cfg)}",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    with torch.no_grad():
        expected = model(dummy).numpy()
    got = ort_session(path).run(None, {"input": dummy.numpy()})[0]
    error = float(np.abs(got - expected).max())
    log.info("ONNX export %s (%.2f MB), max |onnx - torch| = %.2e", path, path.stat().st_size / 2**20, error)
    if error > 1e-4:
        raise RuntimeError(f"ONNX output differs from torch by {error}")


def ort_session(path: Path) -> ort.InferenceSession:
    """CPU ONNX Runtime session for ``path``."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def read_input(path: Path) -> np.ndarray:
    """Load a PNG the way a user would: BGR -> RGB, normalise, NCHW float32."""
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return to_tensor(rgb[None]).numpy()


def write_examples(session: ort.InferenceSession, folder: Path) -> dict[str, bool]:
    """Save the first sample of each class in ``EXAMPLE_CLASSES`` (stream ``EXAMPLE_SEED``) and the first
    two-object sample (stream ``EXAMPLE_SEED + 1``), without selecting by the model's answer.

    Returns, per written file stem, whether the model classifies the re-read PNG correctly (for the
    two-object image: both classes in the top two).
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {CLASS_NAMES.index(name) for name in EXAMPLE_CLASSES}
    results: dict[str, bool] = {}
    index = 0
    while wanted:
        sample = make_sample(np.random.default_rng([EXAMPLE_SEED, index]), min_scale=48, max_scale=90)
        index += 1
        if sample.label not in wanted:
            continue
        wanted.discard(sample.label)
        name = CLASS_NAMES[sample.label]
        logits = _save_and_run(session, sample.image, folder / f"{name}.png")
        results[name] = int(logits.argmax()) == sample.label
        log.info("example %s.png (sample %d): predicted %s", name, index - 1, CLASS_NAMES[int(logits.argmax())])
    pair = make_two_object_sample(np.random.default_rng([EXAMPLE_SEED + 1, 0]), min_scale=48, max_scale=80)
    logits = _save_and_run(session, pair.image, folder / "two_objects.png")
    top2 = np.argsort(logits)[-2:][::-1].tolist()
    results["two_objects"] = set(top2) == set(pair.labels)
    log.info(
        "two_objects.png holds %s; top two predicted %s",
        [CLASS_NAMES[label] for label in pair.labels],
        [CLASS_NAMES[label] for label in top2],
    )
    return results


def _save_and_run(session: ort.InferenceSession, image: np.ndarray, path: Path) -> np.ndarray:
    """Write ``image`` to ``path`` and return the model's logits for the re-read PNG."""
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return session.run(None, {"input": read_input(path)})[0][0]


def write_manifest(out: Path, cfg: Config, accuracy: float, minutes: float, steps: int) -> None:
    """Write ``<out>/manifest.json`` describing the exported model."""
    manifest = {
        "default": MODEL_NAME,
        "models": {
            MODEL_NAME: {
                "file": MODEL_FILE,
                "kind": "trained",
                "description": "Small ViT trained from scratch to classify 10 synthetic shapes "
                "on cluttered backgrounds.",
                "classes": list(CLASS_NAMES),
                "input_size": [INPUT_SIZE, INPUT_SIZE],
                "mean": list(MEAN),
                "std": list(STD),
                "heldout_accuracy": round(accuracy, 4),
                "heldout_n": cfg.heldout_n,
                "heldout_seed": HELDOUT_SEED,
                "train_seed": cfg.seed,
                "train_command": " ".join(["python", "export/train_demo.py", *sys.argv[1:]]),
                "train_minutes": round(minutes, 1),
                "train_steps": steps,
                "train_batch": cfg.batch,
                "architecture": describe(cfg),
            }
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults reproduce the shipped model); every ``Config`` field is a flag."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--examples", type=Path, default=Path("examples/images"))
    parser.add_argument("--log", type=Path, default=TRAINING_LOG)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="data-generating worker processes")
    for field in fields(Config):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default, dest=field.name)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(args.log, mode="w")],
    )
    cfg = Config(**{field.name: getattr(args, field.name) for field in fields(Config)})
    torch.set_num_threads(THREADS)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(args.device)
    log.info("%s; %.2fM parameters; %s", describe(cfg), sum(p.numel() for p in model.parameters()) / 1e6, cfg)
    started = time.time()
    steps = train(model, cfg, args.device, args.workers)
    minutes = (time.time() - started) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "shapes_vit.pt")
    accuracy = evaluate(model, HELDOUT_SEED, cfg.heldout_n, args.device)
    log.info(
        "trained %d steps (batch %d) in %.1f min; held-out accuracy %.4f on %d images (seed %d)",
        steps,
        cfg.batch,
        minutes,
        accuracy,
        cfg.heldout_n,
        HELDOUT_SEED,
    )
    export_onnx(model, args.out / MODEL_FILE, cfg)
    results = write_examples(ort_session(args.out / MODEL_FILE), args.examples)
    log.info("example images written to %s; classified correctly: %s", args.examples, results)
    write_manifest(args.out, cfg, accuracy, minutes, steps)


if __name__ == "__main__":
    main()
