"""Worker for the sharded-generation tests: count the all-gathers of one generation call.

    torchrun --nproc_per_node 2 dist_generate.py MODEL_DIR OUT {plain|peft} {fsdp2|zero3}

Each rank loads the model, keeps an unsharded copy, shards the model and generates greedily with
`HFRolloutEngine` twice: the second call is counted (the first also initialises FSDP's root).
- fsdp2: sharded as accelerate's FSDP2 plugin does (`fully_shard` on every decoder layer, then on
  the root). FSDP2's all-gathers are its own collective (`torch.distributed.all_gather_single`,
  FSDP2's default all-gather in torch 2.13), counted by wrapping it.
- zero3: a DeepSpeed ZeRO-3 engine (`deepspeed.initialize`, every parameter partitioned: no
  persistence threshold). DeepSpeed's all-gathers go through its communication backend
  (`deepspeed.comm`'s `all_gather_into_tensor`, or `all_gather` without it), counted with the
  elements they gather. For comparison, the same generation with DeepSpeed's module hooks on
  (`model.generate` without `unsharded_for_generation`, the path before issue 26 item 4) is counted
  too; then a failing block checks the hooks come back on an exception, and one training step
  checks the engine still gathers per module and trains.
Writes OUT/rank<R>.json.
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from atesd.prompts import PromptConfig, student_prompt
from atesd.rollout.base import SamplingParams
from atesd.rollout.hf import HFRolloutEngine
from atesd.toy.task import toy_problems


class Counter:
    """Wraps `owner.<name>` for each name: counts the calls and the elements of their outputs."""

    def __init__(self, owner, names):
        self.owner, self.real, self.calls, self.elements = owner, {}, 0, 0
        for name in names:
            if hasattr(owner, name):
                self.real[name] = getattr(owner, name)
                setattr(owner, name, self._counted(self.real[name]))

    def _counted(self, real):
        def counted(*args, **kwargs):
            self.calls += 1
            output = kwargs.get("output_tensor", kwargs.get("tensor_list", args[0] if args else None))
            tensors = output if isinstance(output, (list, tuple)) else [output]
            self.elements += sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
            return real(*args, **kwargs)

        return counted

    def take(self) -> tuple[int, int]:
        counts, self.calls, self.elements = (self.calls, self.elements), 0, 0
        return counts

    def restore(self) -> None:
        for name, real in self.real.items():
            setattr(self.owner, name, real)


def fsdp2_record(model, tokenizer, prompts, params):
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.distributed.tensor import DTensor

    from atesd.distributed import _reshards_after_forward

    layers = [m for m in model.modules() if type(m).__name__ == "Qwen3DecoderLayer"]
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    engine = HFRolloutEngine(model, tokenizer, decoder="generate")
    counter = Counter(dist, ["all_gather_single"])
    engine.generate(prompts, params)
    first, _ = counter.take()
    settings_before = [_reshards_after_forward(u) for u in units]  # after the root's lazy initialisation
    rollouts = engine.generate(prompts, params)
    all_gathers, _ = counter.take()
    counter.restore()
    return rollouts, {
        "units": len(units),
        "first_call_all_gathers": first,
        "all_gathers": all_gathers,
        "resharded": all(isinstance(p, DTensor) for p in model.parameters()),
        "settings_restored": [_reshards_after_forward(u) for u in units] == settings_before,
        "layers_reshard_after_forward": [_reshards_after_forward(u) for u in units if u in layers],
    }


def zero3_record(model, tokenizer, prompts, params):
    import deepspeed
    import deepspeed.comm.comm as ds_comm
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    from atesd.distributed import _zero3_offload, unsharded_for_generation

    deepspeed.init_distributed(dist_backend="gloo")
    config = {"train_micro_batch_size_per_gpu": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    trainable = [p for p in model.parameters() if p.requires_grad]
    ds_engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(trainable, lr=1e-3), config=config)
    offload = ds_engine.optimizer.parameter_offload
    engine = HFRolloutEngine(model, tokenizer, decoder="generate")
    parameters = list(model.parameters())
    world = dist.get_world_size()

    def hook_state():
        return (len(offload.forward_hooks), len(offload.backward_hooks), [m.ds_id for m in model.modules()])

    def partitioned():
        return all(p.ds_status == ZeroParamStatus.NOT_AVAILABLE and p.numel() == 0 for p in parameters)

    hooks_before = hook_state()
    counter = Counter(ds_comm.cdb, ["all_gather_into_tensor", "all_gather"])
    engine.generate(prompts, params)
    first, _ = counter.take()
    rollouts = engine.generate(prompts, params)
    all_gathers, gathered_elements = counter.take()
    after_call = (hook_state() == hooks_before, partitioned())
    with torch.no_grad():  # the same generation with DeepSpeed's module hooks on
        model.generate(input_ids=torch.tensor([list(prompts[0])]), max_new_tokens=params.max_new_tokens,
                       do_sample=False, synced_gpus=True)
    hooks_on_all_gathers, hooks_on_elements = counter.take()
    try:
        with unsharded_for_generation(model):
            raise RuntimeError("generation failed")
    except RuntimeError:
        pass
    after_exception = (hook_state() == hooks_before, partitioned())
    counter.take()
    batch = torch.tensor([list(prompts[0])])
    loss = ds_engine(input_ids=batch, labels=batch).loss
    ds_engine.backward(loss)
    ds_engine.step()
    training_all_gathers, _ = counter.take()
    counter.restore()
    return rollouts, {
        "offload_found": _zero3_offload(model) is offload,
        "parameters": len(parameters),
        "padded_elements": sum(-(-p.ds_numel // world) * world for p in parameters),
        "first_call_all_gathers": first,
        "all_gathers": all_gathers,
        "gathered_elements": gathered_elements,
        "hooks_on_all_gathers": hooks_on_all_gathers,
        "hooks_on_gathered_elements": hooks_on_elements,
        "hooks_restored": after_call[0], "partitioned": after_call[1],
        "hooks_restored_after_exception": after_exception[0], "partitioned_after_exception": after_exception[1],
        "training_all_gathers": training_all_gathers,
        "training_loss_finite": bool(torch.isfinite(loss).item()),
    }


def main(model_dir: str, out: str, wrap: str, sharding: str = "fsdp2") -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if wrap == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    whole = copy.deepcopy(model)
    problems = toy_problems(4, seed=rank, split="test")  # each rank its own prompts, as in training
    prompts = [student_prompt(tokenizer, p.problem, PromptConfig()) for p in problems]
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    record_of = {"fsdp2": fsdp2_record, "zero3": zero3_record}[sharding]
    rollouts, record = record_of(model, tokenizer, prompts, params)
    expected = HFRolloutEngine(whole, tokenizer, decoder="generate").generate(prompts, params)
    record["decoded_tokens"] = max(len(r.completion_ids) for r in rollouts)
    record["same_as_unsharded"] = [r.completion_ids for r in rollouts] == [r.completion_ids for r in expected]
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
