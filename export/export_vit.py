"""Export a PyTorch ViT classifier to ONNX (legacy TorchScript exporter, opset 14-17).

    python export/export_vit.py deit_small_patch16_224 -o deit_s.onnx [--static-batch] [--opset 17]

builds a timm model with random weights (no weights can be downloaded here)
and writes it with a dynamic batch axis unless ``--static-batch``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import warnings
from pathlib import Path

import onnx
import torch


class LogitsOnly(torch.nn.Module):
    """Wrap a model whose forward returns an object with ``.logits`` (Hugging Face)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values)
        return out.logits if hasattr(out, "logits") else out


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    input_size: tuple[int, int] = (224, 224),
    opset: int = 17,
    dynamic_batch: bool = True,
    metadata: dict | None = None,
    dynamo: bool = False,
) -> Path:
    """Export ``model`` (eval mode) with input ``input`` [B,3,H,W] and output ``logits``, with the
    TorchScript exporter or, with ``dynamo``, torch.export (torch's default; weights inlined)."""
    model = model.eval()
    example = torch.randn(1, 3, *input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {"input_names": ["input"], "output_names": ["logits"], "opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = {next(iter(inspect.signature(model.forward).parameters)): {0: torch.export.Dim("batch")}}
            program = torch.onnx.export(
                model, (example,), dynamic_shapes=shapes if dynamic_batch else None, dynamo=True, **names
            )
            program.save(str(path), external_data=False)
        else:
            # No torch.no_grad(): under it torchvision's attention takes a fused fast path
            # (aten::_native_multi_head_attention) that has no ONNX export.
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(
                model, example, str(path), dynamic_axes=axes, do_constant_folding=True, dynamo=False, **names
            )
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=json.dumps(value))
        onnx.save(proto, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="timm model name, e.g. deit_small_patch16_224")
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--static-batch", action="store_true", help="fix the batch at 1")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import timm

    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    size = tuple(model.default_cfg["input_size"][1:])
    export_onnx(
        model,
        args.output,
        size,
        args.opset,
        not args.static_batch,
        {
            "mean": list(model.default_cfg["mean"]),
            "std": list(model.default_cfg["std"]),
            "description": f"{args.model} with RANDOM weights (seed {args.seed})",
        },
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
