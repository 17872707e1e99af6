"""The paper's evaluation (``gsp evaluate``) and its perception-distortion sweep (``--sweep``), one module per
concern:

* :mod:`.points` - the rate points (codec, enhancer, temperature) from the registry;
* :mod:`.running` - compress, decompress and enhance every image at every rate point, resumably, in worker
  processes; the one per-process cache of models and metrics;
* :mod:`.variants` / :mod:`.sweep` - what the sweep varies, and the sweep run and analysed (controls at equal PSNR
  cost, the operating-point rule);
* :mod:`.stats` - means and paired differences with one interval method (95 % Student t);
* :mod:`.report` / :mod:`.plots` - the markdown and the figures.

The perceptual backends beside the evaluation's own (ST-LPIPS VGG, the cached reference side) live with the
metrics in :mod:`groundstation.metrics.backends`.
"""

from .points import ResolvedPoint, resolve_rate_points
from .report import markdown_report, read_reference_points, sweep_markdown
from .running import (PER_IMAGE_COLUMNS, PER_IMAGE_CSV, WHOLE, EvaluationResult, Tiling, evaluate_folder,
                      evaluate_image)
from .stats import ci95, paired_effects, summarize
from .sweep import (SWEEP_COLUMNS, SWEEP_CSV, SweepResult, chosen_effects, controls_at_cost, interpolate_at,
                    matched_strength, rule_choice, summarize_sweep, sweep_folder, check_sweep_only)
from .variants import (DEFAULT_NOISE, DEFAULT_TEMPERATURES, DEFAULT_UNSHARP, RULE_MAX_COST_DB, SweepSpec, Variant,
                       add_gaussian_noise, parse_values, unsharp_mask)

__all__ = ["DEFAULT_NOISE", "DEFAULT_TEMPERATURES", "DEFAULT_UNSHARP", "PER_IMAGE_COLUMNS", "PER_IMAGE_CSV",
           "RULE_MAX_COST_DB", "SWEEP_COLUMNS", "SWEEP_CSV", "WHOLE", "EvaluationResult", "ResolvedPoint",
           "SweepResult", "SweepSpec", "Tiling", "Variant", "add_gaussian_noise", "chosen_effects", "ci95",
           "controls_at_cost", "evaluate_folder", "evaluate_image", "interpolate_at", "markdown_report",
           "matched_strength", "paired_effects", "parse_values", "read_reference_points", "resolve_rate_points",
           "rule_choice", "summarize", "summarize_sweep", "sweep_folder", "check_sweep_only", "sweep_markdown", "unsharp_mask"]
