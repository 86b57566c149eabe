"""Worker for the two-process test: train, then write this rank's reveal ratios and weight sums."""

import json
import sys


from atesd.config import load_config
from atesd.train import train

config, out = sys.argv[1], sys.argv[2]
result = train(load_config(config))
rank = result.process_index
weights = {name: float(p.double().sum()) for name, p in result.model.named_parameters()}
digest = float(sum(p.double().pow(2).sum() for p in result.model.parameters()))
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump({"ratios": result.reveal_ratios, "weights": weights, "digest": digest,
               "num_processes": result.num_processes}, fh)
