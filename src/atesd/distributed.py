"""What changes when the policy is trained by DDP, FSDP2 or DeepSpeed: accelerate's APIs, one place.

1. The accelerator (`make_accelerator`). `Accelerator(gradient_accumulation_steps=optim.grad_accum_steps)`:
   the loop runs each micro-batch under `accelerator.accumulate(policy)`, so gradients are
   synchronised on the last micro-batch only, under DDP (`no_sync`), FSDP2
   (`set_requires_gradient_sync`) and DeepSpeed (the engine's accumulation boundary) alike.
   Under DeepSpeed the engine clips and steps inside the backward of the last micro-batch
   (accelerate's `DeepSpeedEngineWrapper`), so its config must hold the run's values before
   `prepare`: `gradient_clipping` = `optim.max_grad_norm`, `gradient_accumulation_steps` =
   `optim.grad_accum_steps` and `train_micro_batch_size_per_gpu` = rollouts per micro-batch. They
   are filled where the config says `auto` (accelerate's `DeepSpeedPlugin.fill_match`, the way
   accelerate fills its own `auto` values); a launcher file that fixes another value is an error,
   not a silent override (accelerate itself would keep the file's accumulation steps and fill
   clipping with 1.0). `ACCELERATE_GRADIENT_ACCUMULATION_STEPS` (set by `accelerate launch` from a
   config's `gradient_accumulation_steps`) overrides the constructor argument inside accelerate;
   a value other than `optim.grad_accum_steps` is refused for the same reason.
2. Full tensors of sharded parameters. Under FSDP2 a parameter is a `DTensor` shard; under
   DeepSpeed ZeRO-3 it is an empty placeholder outside its module's forward. Anything that reads
   the weights outside the model's forward must go through here:
   - `through_head(model, fn, *inputs)`: `fn(weight, *inputs)` with the output head's full weight
     [V, H], for the chunked loss, the log-probs, the probe and the grounding score. FSDP2: the
     unit holding the head (the root) is unsharded with its own `unshard()`, so the weight is
     FSDP's unsharded parameter and FSDP's post-backward reduce-scatters its gradient like any
     other. ZeRO-3: `fn` runs as the head module's forward, so ZeRO-3's module hooks gather the
     weight, release it, and gather it again for the backward (a `GatheredParameters` block would
     not do: the model's own forward releases the head inside it).
   - `gathered_module(model, module)`, `gathered(tensors)`, `full_tensor(t)`: no-grad whole
     values, one module (FSDP2: one unit) at a time, for the weight sync to vLLM, saving
     (`atesd.weights`) and the EMA teacher. Every process must take part: these are collectives.
   - `unsharded_for_generation(model)`: generation with the parameters gathered once per call, not
     once per layer and decoded token: FSDP2 units unsharded (also through peft's `generate`, which
     bypasses the root), or ZeRO-3 parameters gathered with DeepSpeed's module hooks off.
3. `is_sharded(model)`: FSDP2 or ZeRO-3 (the lean decoder and a teacher copy made by
   `copy.deepcopy` need whole tensors; generation must keep ranks in step).

Tested on 2 CPU processes (tests/test_distributed.py) against DDP, for FSDP2, ZeRO-2 and ZeRO-3
through the shipped accelerate configs.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from accelerate import Accelerator

# ---------------------------------------------------------------- the accelerator


def make_accelerator(cfg, project_dir: str) -> Accelerator:
    """The run's Accelerator: gradient accumulation through accelerate, and under DeepSpeed the
    engine's clipping / accumulation / micro-batch set from `cfg` (module docstring, point 1)."""
    steps = cfg.optim.grad_accum_steps
    accelerator = Accelerator(gradient_accumulation_steps=steps, log_with=cfg.report_to or None,
                              project_dir=project_dir)
    if accelerator.gradient_accumulation_steps != steps:
        raise ValueError(
            f"accelerate runs {accelerator.gradient_accumulation_steps} gradient-accumulation steps but "
            f"optim.grad_accum_steps={steps}: ACCELERATE_GRADIENT_ACCUMULATION_STEPS (or the launcher config's "
            "gradient_accumulation_steps) overrides it; remove it and set optim.grad_accum_steps")
    if accelerator.distributed_type.name == "DEEPSPEED":
        rollouts = cfg.prompts_per_step // accelerator.num_processes * cfg.rollout.num_generations
        configure_deepspeed(accelerator.state.deepspeed_plugin, max_grad_norm=cfg.optim.max_grad_norm,
                            grad_accum_steps=steps, micro_batch=rollouts // steps)
    return accelerator


def configure_deepspeed(plugin, *, max_grad_norm: float, grad_accum_steps: int, micro_batch: int) -> None:
    """Fill the DeepSpeed config's `auto` values from the run; a fixed value that differs is an error."""
    wanted = {"gradient_clipping": max_grad_norm, "gradient_accumulation_steps": grad_accum_steps,
              "train_micro_batch_size_per_gpu": micro_batch}
    config = plugin.deepspeed_config
    for key, value in wanted.items():
        if key not in config:  # absent = auto; DeepSpeed's own default would be no clipping / batch 1
            config[key] = "auto"
    config["train_batch_size"] = "auto"  # accelerate fills it from the micro-batch, steps and processes
    mismatches = []
    for key, value in wanted.items():
        plugin.fill_match(key, mismatches, must_match=True, **{key: value})
    if mismatches:
        raise ValueError("the DeepSpeed config contradicts the training config (set these to auto, or remove "
                         "them from the accelerate config):\n" + "\n".join(mismatches))
    bf16 = config.get("bf16", {})
    if isinstance(bf16, dict) and bf16.get("check_grad_overflow") is False:
        raise ValueError("bf16.check_grad_overflow=false: the loop relies on DeepSpeed skipping a step whose "
                         "gradients are not finite (atesd.train.loss_and_backward)")


# ---------------------------------------------------------------- sharded parameters


def _is_dtensor(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _is_zero3(tensor) -> bool:
    return hasattr(tensor, "ds_id")


def _fsdp_module_type():
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return FSDPModule


def is_sharded(model) -> bool:
    """True when `model` is sharded by FSDP2 (some module is an FSDPModule: after a forward the
    root's parameters are whole tensors for a while, so their type does not tell) or its
    parameters are ZeRO-3 partitions."""
    fsdp = _fsdp_module_type()
    if fsdp is not None and any(isinstance(m, fsdp) for m in model.modules()):
        return True
    parameter = next(model.parameters(), None)
    return parameter is not None and _is_zero3(parameter)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter, detached: a DTensor all-gathered, a ZeRO-3 partition gathered
    (a copy), anything else as it is. A collective for sharded tensors: every process calls it."""
    if _is_dtensor(tensor):
        return tensor.detach().full_tensor()
    if _is_zero3(tensor):
        with gathered([tensor]):
            return tensor.detach().clone()
    return tensor.detach()


@contextlib.contextmanager
def gathered(tensors: Iterable[torch.Tensor]):
    """ZeRO-3 parameters gathered for the block (`deepspeed.zero.GatheredParameters`, read-only);
    a no-op for anything else (use `full_tensor` for DTensors)."""
    partitioned = [t for t in tensors if _is_zero3(t)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def fsdp_units(model) -> dict[int, object]:
    """id(module) → the FSDP2 module whose unit holds its parameters (the innermost FSDPModule at or
    above it); empty for a model without FSDP2."""
    FSDPModule = _fsdp_module_type()
    if FSDPModule is None:
        return {}
    units: dict[int, object] = {}

    def walk(module, unit):
        unit = module if isinstance(module, FSDPModule) else unit
        if unit is not None:
            units[id(module)] = unit
        for child in module.children():
            walk(child, unit)

    walk(model, None)
    return units


@contextlib.contextmanager
def gathered_module(model, module, units: dict | None = None):
    """`module`'s parameters whole for the block, read-only: its FSDP2 unit unsharded (then
    resharded), or its ZeRO-3 partitions gathered; a no-op otherwise. Inside, read parameters
    through the module (FSDP2 registers other objects while unsharded). A collective."""
    parameters = list(module.parameters())
    if parameters and _is_zero3(parameters[0]):
        with gathered(parameters):
            yield
        return
    unit = (units if units is not None else fsdp_units(model)).get(id(module))
    if unit is None:
        yield
        return
    unit.unshard()
    try:
        yield
    finally:
        unit.reshard()


def _reshards_after_forward(unit) -> bool:
    """Whether an FSDP2 unit frees its gathered parameters after each forward (torch keeps this as
    its param groups' post-forward mesh; True, FSDP2's default, if that ever moves)."""
    groups = getattr(unit._get_fsdp_state(), "_fsdp_param_groups", None)
    if groups is None:  # pragma: no cover - a torch that renamed FSDP2's internals
        return True
    return any(getattr(group, "post_forward_mesh_info", True) is not None for group in groups)


@contextlib.contextmanager
def unsharded_for_generation(model, pad_id: int = 0):
    """Every parameter gathered once for the block, a whole generation call, under FSDP2 or
    DeepSpeed ZeRO-3 (a no-op otherwise). Without it each decoded token's forward gathers every
    layer again and frees it after: ~layers × tokens all-gathers per call instead of ~layers
    (FSDP2) or one gather of the whole model (ZeRO-3). The memory held meanwhile is the whole
    model's, as under DDP.

    FSDP2: each unit is unsharded up front with `reshard_after_forward` off (FSDP2's
    `set_reshard_after_forward(False)`, as TRL does for generation), then resharded and given its
    setting back. A peft model's `generate` runs the inner model's forward, which never passes the
    sharded root's hooks: FSDP2 would initialise from the first unit that runs (and refuses a
    grouped one, accelerate's tied embedding and head). So the root runs one forward of a single
    token first (once per model).

    ZeRO-3: `_zero3_gathered_for_generation`."""
    parameter = next(model.parameters(), None)
    if parameter is not None and _is_zero3(parameter):
        with _zero3_gathered_for_generation(model):
            yield
        return
    fsdp = _fsdp_module_type()
    units = [m for m in model.modules() if isinstance(m, fsdp)] if fsdp is not None else []
    if not units:
        yield
        return
    if isinstance(model, fsdp) and not getattr(model, "_atesd_root_initialised", False):
        with torch.no_grad():
            device = next(model.parameters()).device
            model(input_ids=torch.full((1, 1), pad_id, dtype=torch.long, device=device))
        model._atesd_root_initialised = True
    settings = [(unit, _reshards_after_forward(unit)) for unit in units]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit, reshard_after_forward in settings:
            unit.reshard()
            unit.set_reshard_after_forward(reshard_after_forward, recurse=False)


def _zero3_offload(model):
    """The `DeepSpeedZeRoOffload` whose module hooks gather `model`'s ZeRO-3 parameters (the
    engine's `optimizer.parameter_offload`, or the engine's `optimizer` itself without a training
    optimizer), found from `model`'s own forward pre-hooks: DeepSpeed registers closures over it
    (through its nvtx and `torch.compiler.disable` wrappers). None when `model` has no such hook
    (ZeRO-3 parameters made by `deepspeed.zero.Init` outside an engine)."""
    from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload

    pending, seen = list(model._forward_pre_hooks.values()), set()
    while pending:
        item = pending.pop()
        if isinstance(item, DeepSpeedZeRoOffload):
            return item
        if not callable(item) or id(item) in seen:
            continue
        seen.add(id(item))
        for cell in getattr(item, "__closure__", None) or ():
            try:
                pending.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    return None


@contextlib.contextmanager
def _zero3_gathered_for_generation(model):
    """ZeRO-3: the whole model's parameters gathered once (`deepspeed.zero.GatheredParameters`,
    read-only) and DeepSpeed's per-module hooks taken off for the block, as TRL's
    `unwrap_model_for_generation` and DeepSpeed's own `deepspeed.runtime.zero.
    unwrap_model_for_generation` do (the latter takes the engine, which the rollout backend does
    not hold, and gives nothing back when generation raises): with the hooks on, each module's
    forward would gather its parameters and its end would free them again, inside the gathered
    block too. The hooks are those the offload object keeps (`forward_hooks`, `backward_hooks`:
    removed), registered again with its `_register_deepspeed_module` under the modules' own ids
    (numbered from the root's `ds_id`, so bookkeeping keyed by module id stays valid; tested with
    DeepSpeed 0.19) before the parameters are partitioned again, also when generation raises. The
    offload's start-of-forward hook (a step reset of its prefetch trace) stays."""
    offload = _zero3_offload(model)
    root = offload.module if offload is not None else model
    with gathered(list(root.parameters())):
        if offload is None:
            yield
            return
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            register = getattr(offload, "_register_deepspeed_module", None) or offload._register_hooks_recursively
            register(root, count=[getattr(root, "ds_id", 0)])  # (the name before DeepSpeed 0.16.4)


def architecture_name(model) -> str:
    """The model's class name as a checkpoint's `architectures` holds it (FSDP2 renames the class
    of a sharded module to FSDP<name>)."""
    fsdp = _fsdp_module_type()
    return next(c.__name__ for c in type(model).__mro__ if fsdp is None or not issubclass(c, fsdp))


def through_head(model, fn, *inputs):
    """`fn(weight, *inputs)` with `weight` the output head's full weight [V, H] (module docstring,
    point 2); `fn` returns a tensor or a tuple of tensors. Gradients reach the real parameter:
    - plain or DDP models: `fn(head.weight, *inputs)`.
    - FSDP2: the unit holding the head is unsharded (`FSDPModule.unshard`), so `weight` is FSDP's
      unsharded parameter and FSDP's post-backward reduce-scatters its gradient; resharded at once
      when no backward will follow (otherwise FSDP reshards after the backward).
    - ZeRO-3: `fn` runs as the head module's forward, so ZeRO-3's own module hooks gather the
      weight for it, release it after, and gather it again for its backward.
    Every process must call it the same number of times (the gathers are collectives)."""
    head = model.get_output_embeddings()
    weight = head.weight
    if _is_zero3(weight):
        head.forward = lambda *xs: fn(head.weight, *xs)  # an instance attribute: hooks still run
        try:
            return head(*inputs)
        finally:
            del head.forward
    unit = fsdp_units(model).get(id(head)) if _is_dtensor(weight) or is_sharded(model) else None
    if unit is not None:  # (after a forward the root unit may hold whole tensors already)
        unit.unshard()
        out = fn(head.weight, *inputs)
        outputs = out if isinstance(out, tuple) else (out,)
        if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in outputs):
            unit.reshard()
        return out
    return fn(weight, *inputs)
