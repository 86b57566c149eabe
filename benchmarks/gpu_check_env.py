"""The GPU check's first section, in seconds: the environment, and what in atesd it cannot run.

Part of benchmarks/gpu_check.py (section "environment"); needs no GPU and loads no model.
- versions: Python, torch (and its CUDA build), transformers, accelerate, peft, omegaconf,
  math-verify, vllm, deepspeed (None when absent), and where each was imported from (the carried
  wheels of .gpu-wheels/ or the machine's own packages);
- the device: name, memory, compute capability, the driver (nvidia-smi) when a GPU is visible;
- torch against pyproject.toml's range, and `TORCH_FEATURES`: each torch API atesd calls that
  older releases lack, probed on this torch, with the atesd module that needs it;
- every atesd module imported: the ones that fail, with the error (a missing package, or an API
  this torch or transformers does not have).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import platform
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "omegaconf",
            "math_verify", "latex2sympy2_extended", "antlr4", "sympy", "datasets", "matplotlib", "vllm",
            "deepspeed")


def _fsdp_module():
    from torch.distributed.fsdp import FSDPModule

    return FSDPModule


# (torch API, the atesd modules that call it, a probe returning truthy when this torch has it)
TORCH_FEATURES = (
    ("torch.nn.functional.rms_norm", "atesd.rollout.lean",
     lambda torch: hasattr(torch.nn.functional, "rms_norm")),
    ("torch.distributed.tensor.DTensor (public module)", "atesd.distributed",
     lambda torch: importlib.import_module("torch.distributed.tensor").DTensor),
    ("torch.distributed.fsdp.FSDPModule (FSDP2)", "atesd.distributed, atesd.weights",
     lambda torch: _fsdp_module()),
    ("FSDPModule.set_reshard_after_forward / unshard / reshard", "atesd.distributed (generation)",
     lambda torch: all(hasattr(_fsdp_module(), name) for name in ("set_reshard_after_forward", "unshard", "reshard"))),
    ("torch.utils.checkpoint.checkpoint(use_reentrant=False)", "atesd.scoring, atesd.divergence_chunked",
     lambda torch: "use_reentrant" in inspect.signature(importlib.import_module("torch.utils.checkpoint").checkpoint)
     .parameters),
    ("Module.register_forward_hook / pre_hook(with_kwargs=True)", "atesd.scoring",
     lambda torch: "with_kwargs" in inspect.signature(torch.nn.Module.register_forward_pre_hook).parameters),
    ("torch.distributed.all_gather_object", "atesd.probe", lambda torch: hasattr(torch.distributed, "all_gather_object")),
    ("torch.cuda.mem_get_info", "atesd.train", lambda torch: hasattr(torch.cuda, "mem_get_info")),
    ("torch.random.fork_rng(devices=...)", "atesd.rollout",
     lambda torch: "devices" in inspect.signature(torch.random.fork_rng).parameters),
    ("torch.inference_mode", "atesd.rollout.hf", lambda torch: hasattr(torch, "inference_mode")),
)


def _version(name: str) -> dict:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # ImportError, or a package that fails while importing
        return {"version": None, "error": f"{type(error).__name__}: {error}"[:300]}
    location = str(Path(getattr(module, "__file__", "") or "").resolve())
    version = getattr(module, "__version__", None)
    if version is None:
        from importlib.metadata import PackageNotFoundError, packages_distributions, version as dist_version

        try:
            version = dist_version(packages_distributions().get(name, [name])[0])
        except PackageNotFoundError:
            version = "?"
    return {"version": version,
            "from": "carried wheels" if "/.gpu-wheels/" in location else location}


def _torch_range() -> str | None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return next((r for r in project["dependencies"] if r.replace(" ", "").startswith("torch")), None)


def _device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"cuda_available": False}
    props = torch.cuda.get_device_properties(0)
    out = {"cuda_available": True, "name": props.name, "memory_gib": props.total_memory / 2**30,
           "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    try:
        out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        out["driver"] = f"nvidia-smi unavailable: {error}"
    return out


def _atesd_imports() -> dict:
    import atesd

    failed, count = {}, 0
    for info in pkgutil.walk_packages(atesd.__path__, "atesd."):
        if info.name.endswith("__main__"):  # runs the CLI when imported
            continue
        count += 1
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failed[info.name] = f"{type(error).__name__}: {error}"[:300]
    return {"modules": count, "failed": failed}


def environment(_work: Path, _device_kind: str, _tiny: bool) -> tuple[dict, list[str]]:
    """The "environment" section: (result, failures). A failure: a core atesd module does not
    import, or this torch lacks an API atesd calls."""
    import torch
    from packaging.requirements import Requirement

    result = {"python": platform.python_version(), "executable": sys.executable,
              "packages": {name: _version(name) for name in PACKAGES},
              "torch_cuda_build": torch.version.cuda, "device": _device()}
    requirement = _torch_range()
    installed = torch.__version__.split("+")[0]
    result["torch_range"] = requirement
    result["torch_in_range"] = bool(requirement) and Requirement(requirement).specifier.contains(installed)
    features = []
    for what, used_by, probe in TORCH_FEATURES:
        try:
            present = bool(probe(torch))
            error = None
        except Exception as caught:
            present, error = False, f"{type(caught).__name__}: {caught}"[:200]
        features.append({"feature": what, "used_by": used_by, "present": present, "error": error})
    result["torch_features"] = features
    result["needs_newer_torch"] = [f"{f['feature']} ({f['used_by']})" for f in features if not f["present"]]
    try:
        result["atesd_imports"] = _atesd_imports()
    except Exception:
        result["atesd_imports"] = {"modules": 0, "failed": {"atesd": traceback.format_exc()[-500:]}}
    failures = [f"this torch ({torch.__version__}) lacks {item}" for item in result["needs_newer_torch"]]
    optional = ("atesd.experiments.", "atesd.rollout.vllm")  # plots need matplotlib; vllm only when built
    failures += [f"{name} does not import: {error}" for name, error in result["atesd_imports"]["failed"].items()
                 if not name.startswith(optional)]
    if not result["torch_in_range"]:
        failures.append(f"torch {torch.__version__} is outside pyproject.toml's {requirement}")
    return result, failures


def markdown(result: dict) -> list[str]:
    packages = ", ".join(f"{name} {item['version']}" for name, item in result["packages"].items()
                         if item["version"] is not None)
    missing = ", ".join(name for name, item in result["packages"].items() if item["version"] is None)
    device = result["device"]
    lines = [f"python {result['python']}; {packages}; CUDA build {result['torch_cuda_build']}",
             f"absent: {missing or 'none'}",
             f"device: {device.get('name', 'no CUDA device')}" + (
                 f", {device['memory_gib']:.1f} GiB, capability {device['capability']}, driver {device['driver']}"
                 if device.get("cuda_available") else ""),
             f"torch in pyproject's range ({result['torch_range']}): {result['torch_in_range']}",
             "needs a newer torch: " + ("; ".join(result["needs_newer_torch"]) or "nothing found"),
             f"atesd modules imported: {result['atesd_imports']['modules'] - len(result['atesd_imports']['failed'])}"
             f" of {result['atesd_imports']['modules']}"]
    lines += [f"  - {name}: {error}" for name, error in result["atesd_imports"]["failed"].items()]
    return lines
