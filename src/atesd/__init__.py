"""atesd: on-policy self-distillation with adaptive teacher exposure.

The package follows the method step by step: `data` loads problems, `reveal` truncates the
reference, `prompts` renders student and teacher, `rollout` samples, `divergence` scores,
`exposure` picks the reveal ratio, and `train` runs the loop that calls them.

The Python API (`atesd.api`), imported on first use so that `import atesd` stays light:

    from atesd import TrainConfig, load_config, train, evaluate

`atesd.train` and `atesd.evaluate` are also the names of two modules: here they are the API's
functions, and the modules stay importable by their full names (`from atesd.train import ...`).
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_API = {"TrainConfig": "atesd.config", "load_config": "atesd.config", "train": "atesd.api",
        "evaluate": "atesd.api", "TrainResult": "atesd.train", "EvalReport": "atesd.evaluate"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'atesd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """The package module: importing the submodule `atesd.train` (or `atesd.evaluate`) does not
    replace the API function of the same name on the package."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
