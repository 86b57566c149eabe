"""The policy's weights in checkpoint names: for the vLLM backend and for saving a sharded model.

vLLM loads a Hugging Face checkpoint at start-up and takes weights in checkpoint names
(`model.layers.0.self_attn.q_proj.weight`, ...) when they change. `checkpoint_weights` yields them
from a live model, a peft LoRA model merged on the fly (W + (α/r)·B·A, one matrix at a time, so the
training model is never merged, unmerged or copied); `write_checkpoint` writes a Hugging Face
directory from them (the vLLM engine's start-up directory, and `atesd.models.save_trained` for a
sharded policy). See `atesd.rollout.vllm` (departure 3) for why merged weights rather than vLLM's
LoRA.

Sharded policies (FSDP2, DeepSpeed ZeRO-3): the weights are gathered one module at a time
(`atesd.distributed.gathered_module`: the FSDP2 unit unsharded, or the module's ZeRO-3 partitions
gathered), so at most one decoder layer is whole beyond what training holds. Every process must
iterate to the end (the gathers are collectives); only the main process needs to keep the values.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Iterator

import torch

from atesd.distributed import architecture_name, fsdp_units, gathered_module, is_sharded

_SHARD_BYTES = 2 * 1024**3  # safetensors shard size when writing the engine's start-up checkpoint
_LORA_PARAMETER_PARTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}


def base_model(model):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _lora_delta(layer) -> torch.Tensor | None:
    """Σ over active, unmerged adapters of (α/r)·B·A for one peft LoRA layer ([out, in] like its
    base weight), None when no adapter contributes."""
    if getattr(layer, "disable_adapters", False):
        return None
    delta = None
    for adapter in layer.active_adapters:
        known = adapter in getattr(layer, "lora_A", {}) or adapter in getattr(layer, "lora_embedding_A", {})
        if not known or adapter in layer.merged_adapters:
            continue
        if getattr(layer, "lora_variant", {}).get(adapter) is not None or getattr(layer, "use_dora", {}).get(adapter):
            raise NotImplementedError(
                f"adapter {adapter!r} uses a LoRA variant (e.g. DoRA); sync_weights merges plain LoRA only"
            )
        part = layer.get_delta_weight(adapter)
        delta = part if delta is None else delta + part
    return delta


def checkpoint_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of `model` under the names of its plain transformers
    checkpoint, in module order, detached. For a peft LoRA model the base weight of each adapted
    layer comes out merged, W + Σ (α/r)·B·A, computed only when the iterator reaches it (one extra
    matrix alive at a time); adapter parameters themselves are not listed. Tied weights appear
    once (named_parameters' de-duplication), as in a saved checkpoint. A sharded model's weights
    are gathered per module and yielded as copies (module docstring).
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    base = base_model(model)
    modules = dict(base.named_modules())
    names = [name for name, _ in base.named_parameters()]
    sharded = is_sharded(base)
    with torch.no_grad(), _OneModuleAtATime(model) as whole:  # units from the outer (peft) model: it may be the FSDP root
        for name in names:
            parts = name.split(".")
            if _LORA_PARAMETER_PARTS.intersection(parts):
                continue
            if "base_layer" in parts:
                at = parts.index("base_layer")
                layer = modules[".".join(parts[:at])]
                whole.gather(layer)
                tensor = _current(modules, parts).detach()
                if isinstance(layer, LoraLayer) and parts[at + 1:] == ["weight"]:
                    delta = _lora_delta(layer)
                    if delta is not None:
                        tensor = tensor + delta.to(tensor.dtype)
                yield ".".join(parts[:at] + parts[at + 1:]), tensor.clone() if sharded else tensor
                continue
            whole.gather(modules[".".join(parts[:-1])])
            tensor = _current(modules, parts).detach()
            if "modules_to_save" in parts or "original_module" in parts:
                renamed = _modules_to_save_name(parts, modules, ModulesToSaveWrapper)
                if renamed is not None:
                    yield renamed, tensor.clone() if sharded else tensor
                continue
            yield name, tensor.clone() if sharded else tensor


def trainable_state(model) -> dict[str, torch.Tensor]:
    """{name: value on the CPU} of `model`'s trainable parameters (a LoRA model's adapter), gathered
    per module when sharded; every process must call it."""
    base = model
    modules = dict(base.named_modules())
    names = [name for name, p in base.named_parameters() if p.requires_grad]
    out = {}
    with torch.no_grad(), _OneModuleAtATime(model) as whole:  # units from the outer (peft) model: it may be the FSDP root
        for name in names:
            parts = name.split(".")
            whole.gather(modules[".".join(parts[:-1])])
            out[name] = _current(modules, parts).detach().to("cpu", copy=True)
    return out


def _current(modules: dict, parts: list[str]) -> torch.Tensor:
    """The parameter registered now under `parts` (FSDP2 swaps sharded and unsharded objects)."""
    return getattr(modules[".".join(parts[:-1])], parts[-1])


class _OneModuleAtATime:
    """Keeps at most one module (FSDP2: one unit) gathered: `gather(m)` releases the previous one
    unless `m` is the same (or in the same FSDP2 unit)."""

    def __init__(self, model):
        self.model, self.stack, self.current = model, contextlib.ExitStack(), None
        self.units = fsdp_units(model) if is_sharded(model) else {}

    def __enter__(self):
        return self

    def gather(self, module) -> None:
        key = self.units.get(id(module), module)
        if key is self.current:
            return
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(gathered_module(self.model, module, self.units))
        self.current = key

    def __exit__(self, *exc):
        self.stack.close()


def _modules_to_save_name(parts: list[str], modules: dict, wrapper_type) -> str | None:
    """For a peft `modules_to_save` copy: the original name if this is the copy in use (the active
    adapter's, or the original module when adapters are disabled/absent), else None."""
    marker = "modules_to_save" if "modules_to_save" in parts else "original_module"
    at = parts.index(marker)
    wrapper = modules[".".join(parts[:at])]
    if not isinstance(wrapper, wrapper_type):
        return ".".join(parts)
    active = getattr(wrapper, "active_adapters", None) or [getattr(wrapper, "active_adapter", None)]
    in_use = [a for a in active if a in wrapper.modules_to_save]
    if getattr(wrapper, "disable_adapters", False) or not in_use:
        chosen = marker == "original_module"
        rest = parts[at + 1:]
    else:
        chosen = marker == "modules_to_save" and parts[at + 1] == in_use[0]
        rest = parts[at + 2:]
    return ".".join(parts[:at] + rest) if chosen else None


def write_checkpoint(model, tokenizer, directory: Path, write: bool = True) -> None:
    """A Hugging Face directory vLLM (and transformers) can load: config, tokenizer, weights (merged
    for LoRA) as safetensors shards of at most ~2 GiB (each shard is gathered on the CPU before
    writing). For a sharded model every process calls it and only the one with `write` writes."""
    from safetensors.torch import save_file

    base = base_model(model)
    if write:
        config = copy.deepcopy(base.config)
        config.architectures = [architecture_name(base)]  # unset for a model built from a config; vLLM needs it
        config.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(directory)
    shard: dict[str, torch.Tensor] = {}
    size, index, weight_map, total = 0, 0, {}, 0

    def flush() -> None:
        nonlocal shard, size, index
        if shard:
            index += 1
            file = f"model-{index:05d}.safetensors"
            save_file(shard, str(directory / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, file))
        shard, size = {}, 0

    for name, tensor in checkpoint_weights(model):
        if not write:
            continue
        shard[name] = tensor.to("cpu", copy=True).contiguous()
        size += tensor.numel() * tensor.element_size()
        total += tensor.numel() * tensor.element_size()
        if size >= _SHARD_BYTES:
            flush()
    flush()
    if write:  # the index transformers looks for (vLLM reads the shards either way)
        index_file = directory / "model.safetensors.index.json"
        index_file.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def dtype_name(model) -> str:
    dtype = next(base_model(model).parameters()).dtype
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if dtype not in names:
        raise ValueError(f"cannot serve a {dtype} model with vLLM; pass dtype= explicitly")
    return names[dtype]
