"""atesd: on-policy self-distillation with adaptive teacher exposure.

The package follows the method step by step: `data` loads problems, `reveal` truncates the
reference, `prompts` renders student and teacher, `rollout` samples, `divergence` scores,
`exposure` picks the reveal ratio, and `train` runs the loop that calls them.
"""

__version__ = "0.1.0"
