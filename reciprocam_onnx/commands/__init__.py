"""One module per CLI verb; each class's docstring is its help text."""
from .evaluate import Evaluate
from .explain import Explain
from .fuse import Fuse
from .split import Split

COMMANDS = [Explain, Split, Fuse, Evaluate]
