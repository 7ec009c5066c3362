"""One module per CLI verb; each class's docstring is its help text."""
from .explain import Explain
from .split import Split

COMMANDS = [Explain, Split]
