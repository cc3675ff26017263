"""Which parameter tensors does the validation loss depend on most? `sensitivity` ranks them.

The plants study froze (or gave their own learning rate to) the two tensors the loss was most
sensitive to; this module produces that ranking for any run or torch model, and `read_sensitive`
hands the top K names to `fastcls finetune --freeze-sensitive/--boost-sensitive FILE:K`.

A method is one entry in `METHODS` (`@register`), scoring every *unit* (a parameter tensor, a
module or a layer group) from a `_Probe` over the validation batches:

- `grad-norm`: the sum over batches of each tensor's gradient L2 norm (one backward per batch);
- `fisher`: the diagonal empirical Fisher, the sum over *images* of the squared per-image
  gradient (one backward per image: 5x grad-norm's time on efficientnet_lite0 with bs 64;
  `--batches` caps it);
- `taylor`: |θ·∇θL| summed over batches, the first-order estimate of the loss change when the
  tensor is set to zero (Molchanov et al., 2019), one backward per batch;
- `ablation`: the rise in validation loss when the unit is set to zero (not to its initial value:
  a trained or pretrained run does not keep its initialisation, and rebuilding it would need the
  weights source again). One forward pass over the images per unit, so only the `candidates`
  units that grad-norm ranks highest are ablated; the others have no score and keep grad-norm's
  order after them. A shortlist, not a guarantee: zeroing is a large change that first-order
  scores predict poorly (on efficientnet_lite0, 20 candidates held 3 of the full top 10), so
  pass a large `candidates` when the full ablation ranking matters.

`per="module"` and `per="group"` sum the gradient methods' per-tensor scores over the module's
(or layer group's) tensors, which is exact for fisher and an upper bound of the unit's own
|θ·∇θL| for taylor; ablation zeroes all the unit's tensors together, since loss rises do not add.

`norm_score` is score / max |score|: 1.0 for the top unit, comparable across methods and models
whatever the method's units (norms, squares, loss differences).

Measuring is done in eval mode (BatchNorm uses its running statistics, dropout is off), on a
fixed, seeded choice of images, with every change to the model (train/eval flags,
requires_grad, zeroed tensors) undone in `finally`: the model is left bit-identical. Gradients
are taken with `torch.autograd.grad`, so no `.grad` attribute is touched either.
"""

from __future__ import annotations

from fastcls.studies.sensitivity.methods import METHODS, PER, SensitivityMethod, register
from fastcls.studies.sensitivity.ranking import SensitivityResult, SensitivityRow, rank_parameters, sensitivity
from fastcls.train.sensitive import CSV_COLUMNS, CSV_NAME, check_sensitive_names, read_sensitive

__all__ = [
    "CSV_COLUMNS",
    "CSV_NAME",
    "METHODS",
    "PER",
    "SensitivityMethod",
    "SensitivityResult",
    "SensitivityRow",
    "check_sensitive_names",
    "rank_parameters",
    "read_sensitive",
    "register",
    "sensitivity",
]
