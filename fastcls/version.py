"""The package version, in a module of its own so code inside fastcls never imports the facade."""

from __future__ import annotations

import platform
import sys

__version__ = "0.1.0"

# Libraries whose version a saved model.json records when they are loaded (never imported for it).
RECORDED = ("torch", "torchvision", "timm", "fastai", "lightly")


def versions() -> dict[str, str]:
    """fastcls's, Python's and the loaded libraries' versions, for the record a run keeps of itself."""
    found = {"fastcls": __version__, "python": platform.python_version()}
    for name in RECORDED:
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    return found
