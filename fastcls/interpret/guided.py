"""Guided backpropagation (captum) for units of a layer: which images excite a unit most, and
which of their pixels drive it. The iNaturalist study's "10 neurons of CONV5" figure."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from fastcls.interpret.context import Context
from fastcls.interpret.draw import figure, save, short, show_image

__all__ = ["TOP_IMAGES", "guided_gradients", "guided_plot", "unit_activations"]

TOP_IMAGES = 3  # top-activating images shown per unit


def _unit_scores(activation: Any) -> Any:
    """Each unit's (channel's) peak activation: (N, C, H, W) or tokens (N, T, C) -> (N, C)."""
    if activation.dim() == 4:
        return activation.amax(dim=(2, 3))
    if activation.dim() == 3:
        return activation.amax(dim=1)
    return activation.flatten(1)


def _unit_module(model: Any, layer: Any):
    """A module whose output is the (N, C) unit scores at `layer`; it holds `model`, so captum
    finds (and guides) every ReLU inside."""
    from torch import nn

    class UnitScores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.layer = model, layer

        def forward(self, x):
            captured: list[Any] = []
            handle = self.layer.register_forward_hook(lambda _m, _a, out: captured.append(out))
            try:
                self.model(x)
            finally:
                handle.remove()
            return _unit_scores(captured[-1])

    return UnitScores()


def unit_activations(model: Any, layer: str, x: Any, batch: int = 256) -> Any:
    """(N, C) peak activation of each unit of `layer` for each image of the normalised batch `x`."""
    import torch

    from fastcls.models.layers import preserved, resolve_layer

    scorer = _unit_module(model, resolve_layer(model, layer))
    with preserved(model), torch.no_grad():
        return torch.cat([scorer(x[i : i + batch]).float().cpu() for i in range(0, len(x), batch)]).numpy()


def guided_gradients(model: Any, layer: str, x: Any, units: Any) -> Any:
    """(N, 3, H, W) guided-backprop gradient of unit `units[i]`'s peak activation for image `x[i]`.

    ReLUs pass back only positive gradients where their input was positive, so the map shows
    the pixels that excite the unit. The model is left as it was (in-place ReLUs restored).
    """
    from captum.attr import GuidedBackprop

    from fastcls.models.layers import preserved, resolve_layer

    scorer = _unit_module(model, resolve_layer(model, layer))
    with preserved(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # captum's notice
        inputs = x.detach().clone().requires_grad_(True)
        attribution = GuidedBackprop(scorer).attribute(inputs, target=[int(u) for u in units])
    return attribution.detach().float().cpu().numpy()


def _gradient_image(gradient: Any, grey: bool) -> tuple[Any, dict[str, Any]]:
    """A guided gradient as a picture scaled to +-3 times its RMS: for grey images the gradient of
    the grey value (sum over RGB) on a red/blue scale, for colour images the usual RGB picture."""
    import numpy as np

    g = gradient.sum(axis=0) if grey else gradient.transpose(1, 2, 0)
    g = g / (3 * float(np.sqrt(np.mean(g**2))) + 1e-12)
    interpolation = "nearest" if max(gradient.shape[1:]) < 64 else "antialiased"
    if grey:
        return np.clip(g, -1, 1), {"cmap": "RdBu_r", "vmin": -1, "vmax": 1, "interpolation": interpolation}
    return np.clip(g / 2 + 0.5, 0, 1), {"interpolation": interpolation}


def guided_plot(ctx: Context) -> list[Path]:
    """guided.png: `units` rows, one per unit of the layer (the most strongly firing units); each
    row shows the images that excite the unit most and, beside each, its guided gradient."""
    import numpy as np

    layer = ctx.layer_name
    peaks = np.concatenate([unit_activations(ctx.model, layer, x) for _, x in ctx.chunks()])
    count = max(1, min(ctx.options.units, peaks.shape[1]))
    units = np.argsort(-peaks.max(axis=0), kind="stable")[:count]
    top = min(TOP_IMAGES, ctx.n)
    pairs = [(int(u), int(i)) for u in units for i in np.argsort(-peaks[:, u], kind="stable")[:top]]
    gradients = guided_gradients(ctx.model, layer, ctx.normalised([i for _, i in pairs]), [u for u, _ in pairs])
    grey_data = ctx.grey
    fig, axes = figure(count, 2 * top, 1.5 * 2 * top + 0.6, 1.65 * count + 1.0)
    for k, ((unit, image), gradient) in enumerate(zip(pairs, gradients, strict=True)):
        row, col = divmod(k, top)
        picture = ctx.images[image]
        show_image(axes[row, 2 * col], picture)
        axes[row, 2 * col].set_title(
            f"{short(ctx.classes[int(ctx.labels[image])])}: {peaks[image, unit]:.2f}", fontsize=8
        )
        shown, style = _gradient_image(gradient, grey_data)
        axes[row, 2 * col + 1].imshow(shown, **style)
        axes[row, 2 * col + 1].set_xticks([])
        axes[row, 2 * col + 1].set_yticks([])
        if row == 0:
            axes[row, 2 * col + 1].set_title(f"guided gradient {col + 1}", fontsize=8)
        if col == 0:
            axes[row, 0].set_ylabel(f"unit {unit}", fontsize=10)
    fig.suptitle(
        f"Guided backprop at {layer}: the {count} most active units (rows)\n"
        f"each unit's top {top} images (true class: peak activation) and their guided gradients\n"
        + (
            "(red = brighter pixels raise the unit's activation, blue = lower it)"
            if grey_data
            else "(RGB gradient, mid-grey = no effect)"
        ),
        fontsize=10,
    )
    if grey_data:
        import matplotlib

        mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-3, 3), cmap="RdBu_r")
        fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.4, label="guided gradient / its RMS")
    return [save(fig, ctx.plots / "guided.png")]
