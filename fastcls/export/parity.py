"""The parity check: does the exported file give the PyTorch model's answers on real images?

The reference is always the PyTorch model in float32, on the same images in the same batches.

fp32: every top-1 class must agree, and max |Δ| ≤ 1e-4 (logits, or an ensemble's probabilities).
Only when a model's own fp32 arithmetic is noisier than that is the bound widened, to 4 × its own
rounding error (the same PyTorch module in float32 against float64, measured only when 1e-4 is
exceeded). Why 4: an exported file computing in fp32 strays from the exact result about as far as
PyTorch's fp32 does, so the two can differ by twice that; 4 leaves another factor 2 for summation
order. Seen: an EfficientNet-Lite0 head fine-tuned (lr 0.02, logits up to ~7) with its BatchNorm
statistics refitted on 32 px digits (--frozen-bn restart) is 3.8e-4 from its own float64 result in
PyTorch, and onnxruntime is 4.8e-4 from PyTorch; a fixed 1e-4 would refuse that correct file. The factor
is a heuristic, not a bound: the same model trained at lr 0.05 (logits ~56) is 4.4e-4 from float64 in
PyTorch but 2.2e-3 in onnxruntime (5 ×), and is refused.

fp16 (`--half`): max |Δ| ≤ 1 % of the logit scale, max(1, max |reference|), or 2 × PyTorch's own
fp16 error for this model (the same graph run eagerly in fp16 against the fp32 model, measured
only when 1 % is exceeded): an fp16 file cannot be closer to fp32 than PyTorch's own fp16 run, and
2 leaves room for other kernels. float16 keeps 11 significant bits (relative step 4.9e-4) and the
rounding adds up over a network's depth: the digits cnn is 0.07 % off, EfficientNet-Lite0 2.5 %
in onnxruntime and 2.3 % in PyTorch itself. Top-1 classes must agree except at near ties, where
the fp32 model's top two are within 2 % of the logit scale; that band is fixed, so a model that
fp16 really changes (more flips than near ties) fails however noisy PyTorch's fp16 is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "FP32_OWN_ERROR_FACTOR",
    "FP32_TOLERANCE",
    "HALF_OWN_ERROR_FACTOR",
    "HALF_RELATIVE",
    "Parity",
    "base_tolerance",
    "compare",
]

FP32_TOLERANCE = 1e-4
FP32_OWN_ERROR_FACTOR = 4.0
HALF_RELATIVE = 1e-2
HALF_OWN_ERROR_FACTOR = 2.0


@dataclass
class Parity:
    """What the check measured, and whether the export passed."""

    runtime: str
    data: str
    split: str
    n: int
    agreeing: int
    near_ties: int  # fp16 only: top-1 differences at near ties, allowed by the rule
    max_abs_diff: float
    tolerance: float
    quantity: str  # "logit" or "probability"
    rule: str
    passed: bool
    half: bool = False
    own_error: float | None = None  # PyTorch's own error at this precision, when it was measured

    @property
    def agreement(self) -> float:
        return self.agreeing / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement}

    def summary(self) -> str:
        ties = f", {self.near_ties} at fp16 near ties" if self.near_ties else ""
        verdict = "passed" if self.passed else "FAILED"
        factor = HALF_OWN_ERROR_FACTOR if self.half else FP32_OWN_ERROR_FACTOR
        if self.own_error is not None and factor * self.own_error >= self.tolerance:  # it set the tolerance
            if self.half:
                verdict += f" (PyTorch's own fp16 run of this model is {self.own_error:.2g} from fp32"
            else:
                verdict += f" (the PyTorch model's own fp32 rounding error is {self.own_error:.2g} against float64"
            verdict += f"; the tolerance is {factor:g} × that)"
        return (
            f"parity in {self.runtime} on {self.n} {self.split} images of {self.data}: top-1 agreement "
            f"{self.agreement:.2%} ({self.agreeing}/{self.n}{ties}), max |Δ {self.quantity}| {self.max_abs_diff:.2g} "
            f"(tolerance {self.tolerance:.2g}): {verdict}"
        )


def _scale(reference: np.ndarray) -> float:
    return max(1.0, float(np.abs(reference).max())) if reference.size else 1.0


def base_tolerance(reference: np.ndarray, half: bool) -> float:
    """The bound before any widening: 1e-4 (fp32), 1 % of the logit scale (fp16)."""
    return HALF_RELATIVE * _scale(np.asarray(reference, dtype=np.float64)) if half else FP32_TOLERANCE


def compare(
    reference: np.ndarray,
    exported: np.ndarray,
    half: bool,
    runtime: str,
    data: str,
    split: str,
    quantity: str,
    own_error: float | None = None,
) -> Parity:
    """Score (N, classes) outputs of the exported file against the PyTorch fp32 model's.

    `own_error`: PyTorch's own error for this model at the export's precision (fp32 vs float64,
    or fp16 vs fp32), when measured; it can only widen the |Δ| bound, never the top-1 rule.
    """
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    if reference.shape != exported.shape:
        raise ValueError(f"exported output has shape {exported.shape}, the model's {reference.shape}")
    n = len(reference)
    finite = bool(np.isfinite(exported).all())
    diff = float(np.abs(reference - exported).max()) if n and finite else (0.0 if not n else float("inf"))
    factor = HALF_OWN_ERROR_FACTOR if half else FP32_OWN_ERROR_FACTOR
    tolerance = max(base_tolerance(reference, half), factor * (own_error or 0.0))
    if half:
        rule = (
            "fp16: max |Δ| ≤ max(1% of max(1, max |reference|), 2 × PyTorch's own fp16 error); "
            "top-1 may differ only where the fp32 top two are within 2% of that scale"
        )
    else:
        rule = "fp32: 100% top-1 agreement and max |Δ| ≤ 1e-4 (or 4 × the model's own fp32 rounding error)"
    want, got = reference.argmax(-1), exported.argmax(-1)
    agreeing = int((want == got).sum())
    rows = np.flatnonzero(want != got)
    margins = reference[rows, want[rows]] - reference[rows, got[rows]]
    near_ties = int((margins <= 2 * HALF_RELATIVE * _scale(reference)).sum()) if half else 0
    passed = finite and diff <= tolerance and agreeing + near_ties == n
    return Parity(
        runtime, data, split, n, agreeing, near_ties, diff, tolerance, quantity, rule, passed, half, own_error
    )
