"""Worker for the multi-process tests: train, then write this rank's reveal ratios and weight sums.

    <launcher> dist_train.py CONFIG OUT [override ...]

Launched by torchrun (DDP) or by `accelerate launch --config_file configs/accelerate/<x>.yaml` with
ACCELERATE_USE_CPU=true (FSDP2, DeepSpeed). accelerate 1.15 enables FSDP and DeepSpeed only on an
accelerator device (accelerate/state.py: FSDP is chosen only for the MULTI_GPU/NPU/... distributed
types, DeepSpeed only `not cpu`), while torch's FSDP2 and DeepSpeed 0.19 themselves run on CPU over
gloo. So on CPU this worker sets up the state that `accelerate launch` gives on GPUs: the gloo
process group (MULTI_CPU), then the distributed type and the plugin built from the launcher's
environment (the same FSDP_* / ACCELERATE_DEEPSPEED_* variables the config file sets). Everything
after that, `accelerator.prepare` included, is accelerate's and the library's own code.
"""

import json
import os
import sys

from atesd.config import load_config
from atesd.distributed import is_sharded
from atesd.train import train


def force_sharded_state_on_cpu() -> str:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if os.environ.get("ACCELERATE_USE_CPU", "false").lower() != "true" or not (fsdp or deepspeed):
        return "ddp"
    state = Accelerator(cpu=True).state  # the gloo group from torchrun's environment; shared with train's
    mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if fsdp:
        plugin = FullyShardedDataParallelPlugin()
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        state.fsdp_plugin = plugin
        state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
        return f"fsdp{plugin.fsdp_version}"
    import deepspeed as ds

    ds.init_distributed(dist_backend="gloo")  # DeepSpeed's comm layer over the existing group
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(mixed_precision)
    plugin.select(_from_accelerator_state=True)
    state.deepspeed_plugins = plugin
    state.distributed_type = PartialState().distributed_type = DistributedType.DEEPSPEED
    return f"zero{plugin.zero_stage}"


def poison_one_micro_batch(spec: str) -> None:
    """ATESD_TEST_NAN=RANK:CALL makes the CALL-th objective call (0-based) on process RANK return
    loss + inf: a non-finite loss on one process only whose gradients are finite, so only the
    loop's check can skip the step (DeepSpeed's own overflow check would not see it)."""
    from atesd import objectives

    rank, call = (int(x) for x in spec.split(":"))
    real, calls = objectives.Distill.loss, [0]

    def loss(self, *args, **kwargs):
        value, stats = real(self, *args, **kwargs)
        hit = calls[0] == call and int(os.environ.get("RANK", 0)) == rank
        calls[0] += 1
        return (value + float("inf") if hit else value), stats

    objectives.Distill.loss = loss


kind = force_sharded_state_on_cpu()
if os.environ.get("ATESD_TEST_NAN"):
    poison_one_micro_batch(os.environ["ATESD_TEST_NAN"])
config, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
result = train(load_config(config, overrides))
rank = result.process_index
sharded = is_sharded(result.model)
record = {"ratios": result.reveal_ratios, "num_processes": result.num_processes, "kind": kind, "sharded": sharded,
          "head_type": type(result.model.get_output_embeddings().weight).__name__}
if not sharded:  # (the process group is gone after train: sharded weights are compared in final/)
    record["weights"] = {name: float(p.double().sum()) for name, p in result.model.named_parameters()}
    record["digest"] = float(sum(p.double().pow(2).sum() for p in result.model.parameters()))
if kind == "zero3":  # the module hooks unsharded_for_generation takes off for each generation call
    from atesd.distributed import _zero3_offload

    record["zero3_offload_found"] = _zero3_offload(result.model) is not None
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(record, fh)
