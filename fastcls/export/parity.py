"""The parity check: does the exported file give the PyTorch model's answers on real images?

fp32: every top-1 class must agree and max |Δ| ≤ 1e-4 (logits, or an ensemble's probabilities);
or, for a model whose own fp32 arithmetic is noisier than that, ≤ 4 × its rounding error (the
PyTorch model in float32 against the same model in float64, on the same images). Why: two fp32
implementations that each stray e from the exact result can differ by 2e, and summation order
varies between runtimes; a fine-tuned EfficientNet-Lite0 whose BatchNorm statistics were refitted
on 32 px digits is off by 3.3e-3 from its own float64 result in PyTorch, and onnxruntime by
5.9e-3, so a fixed 1e-4 would refuse a correct file. Only measured when 1e-4 is exceeded.
fp16 (`--half`): max |Δ| ≤ 1e-2 · max(1, max |reference|), and a top-1 class may differ only
where the fp32 model's two candidates are within 2 × that tolerance of each other (a near tie
that fp16 cannot resolve; such images are counted and reported). Why 1 %: float16 keeps 11
significant bits (a relative step of 4.9e-4), each layer adds a few steps of rounding and the
errors add up over a network's depth; on the models in the tests the fp16 error was a fraction
of this (see the README); a 1 % bound still catches a wrong graph, whose errors are of the
logits' own size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["FP32_NOISE_FACTOR", "FP32_TOLERANCE", "HALF_RELATIVE", "Parity", "compare"]

FP32_TOLERANCE = 1e-4
FP32_NOISE_FACTOR = 4.0
HALF_RELATIVE = 1e-2


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
    fp32_noise: float | None = None  # max |PyTorch fp32 - PyTorch float64|, when it was measured

    @property
    def agreement(self) -> float:
        return self.agreeing / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement}

    def summary(self) -> str:
        ties = f", {self.near_ties} at fp16 near ties" if self.near_ties else ""
        verdict = "passed" if self.passed else "FAILED"
        if self.fp32_noise is not None and self.tolerance > FP32_TOLERANCE:
            verdict += (
                f" (the PyTorch model's own fp32 rounding error is {self.fp32_noise:.2g} against float64, "
                f"so the tolerance is {FP32_NOISE_FACTOR:g} × that)"
            )
        return (
            f"parity in {self.runtime} on {self.n} {self.split} images of {self.data}: top-1 agreement "
            f"{self.agreement:.2%} ({self.agreeing}/{self.n}{ties}), max |Δ {self.quantity}| {self.max_abs_diff:.2g} "
            f"(tolerance {self.tolerance:.2g}): {verdict}"
        )


def compare(
    reference: np.ndarray,
    exported: np.ndarray,
    half: bool,
    runtime: str,
    data: str,
    split: str,
    quantity: str,
    fp32_noise: float | None = None,
) -> Parity:
    """Score (N, classes) outputs of the exported file against the PyTorch model's.

    `fp32_noise`: the model's own fp32 rounding error, if measured (widens the fp32 tolerance).
    """
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    if reference.shape != exported.shape:
        raise ValueError(f"exported output has shape {exported.shape}, the model's {reference.shape}")
    n = len(reference)
    finite = bool(np.isfinite(exported).all())
    diff = float(np.abs(reference - exported).max()) if n and finite else (0.0 if not n else float("inf"))
    if half:
        tolerance = HALF_RELATIVE * max(1.0, float(np.abs(reference).max()) if n else 1.0)
        rule = "fp16: max |Δ| ≤ 1% of max(1, max |reference|); top-1 may differ only at near ties"
    else:
        tolerance = max(FP32_TOLERANCE, FP32_NOISE_FACTOR * (fp32_noise or 0.0))
        rule = "fp32: 100% top-1 agreement and max |Δ| ≤ 1e-4 (or 4 × the model's own fp32 rounding error)"
    want, got = reference.argmax(-1), exported.argmax(-1)
    agreeing = int((want == got).sum())
    rows = np.flatnonzero(want != got)
    margins = reference[rows, want[rows]] - reference[rows, got[rows]]
    near_ties = int((margins <= 2 * tolerance).sum()) if half else 0
    passed = finite and diff <= tolerance and agreeing + near_ties == n
    return Parity(runtime, data, split, n, agreeing, near_ties, diff, tolerance, quantity, rule, passed, fp32_noise)
