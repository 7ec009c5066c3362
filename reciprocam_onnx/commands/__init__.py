"""One module per CLI verb; each class's docstring is its help text."""

from __future__ import annotations

import argparse
from typing import Protocol

from .evaluate import Evaluate
from .explain import Explain
from .explain_dataset import ExplainDataset
from .fuse import Fuse
from .preprocess import Preprocess
from .serve import Serve
from .split import Split


class Command(Protocol):
    """What the CLI asks of a verb's class: its name, and to add its subparser (which sets ``run``)."""

    name: str

    @classmethod
    def register(cls, sub: argparse._SubParsersAction) -> None: ...


COMMANDS: list[type[Command]] = [Explain, Split, Fuse, Serve, Evaluate, Preprocess, ExplainDataset]
