"""Grad-CAM and Grad-CAM++ (pytorch-grad-cam): where in the image the predicted class comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastcls.interpret.context import Context
from fastcls.interpret.draw import CORRECT, WRONG, figure, frame, save, short, show_image

__all__ = ["CAM_METHODS", "cam_plot", "class_activation_maps"]

CAM_METHODS = {"Grad-CAM": "GradCAM", "Grad-CAM++": "GradCAMPlusPlus"}  # label -> pytorch_grad_cam class


def class_activation_maps(model: Any, layer: str, x: Any, targets: Any, method: str = "Grad-CAM") -> Any:
    """(N, H, W) maps in [0, 1] (each scaled to its own maximum) for class `targets[i]` of image
    `x[i]`, taken at module `layer` and resized to the input. The model is left as it was.

    >>> maps = class_activation_maps(model, "features.block3.bn", x, [3, 1])  # doctest: +SKIP
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fastcls.models.layers import preserved, reshape_tokens, resolve_layer

    cam_class = getattr(pytorch_grad_cam, CAM_METHODS[method])
    module = resolve_layer(model, layer)
    with preserved(model), cam_class(model=model, target_layers=[module], reshape_transform=reshape_tokens) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def _chosen(ctx: Context) -> Any:
    """Up to a quarter misclassified (highest loss first), the rest spread over the classes."""
    import numpy as np

    count = min(max(ctx.options.images, 1), ctx.n)
    wrong = np.flatnonzero(ctx.predicted != ctx.labels)
    wrong = wrong[np.argsort(-ctx.losses[wrong], kind="stable")][: count // 4]
    taken = set(wrong.tolist())
    rest = [i for i in ctx.sample(count + len(wrong), salt=2) if i not in taken][: count - len(wrong)]
    return np.array(sorted(rest, key=lambda i: (ctx.labels[i], i)) + list(wrong), dtype=np.int64)


def cam_plot(ctx: Context) -> list[Path]:
    """cam.png: for `images` images, the input, then Grad-CAM and Grad-CAM++ of the predicted class
    over it, at the last conv stage (or --layer)."""
    import matplotlib

    from fastcls.models.layers import require_map

    chosen = _chosen(ctx)
    x = ctx.normalised(chosen)
    require_map(ctx.model, ctx.layer_name, x)
    targets = ctx.predicted[chosen]
    maps = {label: class_activation_maps(ctx.model, ctx.layer_name, x, targets, label) for label in CAM_METHODS}
    columns = len(chosen)
    fig, axes = figure(1 + len(maps), columns, 1.9 * columns + 1.2, 2.1 * (1 + len(maps)) + 0.9)
    for col, i in enumerate(chosen):
        truth, guess = int(ctx.labels[i]), int(ctx.predicted[i])
        colour = CORRECT if truth == guess else WRONG
        show_image(axes[0, col], ctx.images[i])
        frame(axes[0, col], colour)
        axes[0, col].set_title(
            f"true {short(ctx.classes[truth])}\npred {short(ctx.classes[guess])} ({ctx.probs[i, guess]:.2f})",
            fontsize=9,
            color=colour,
        )
        for row, label in enumerate(maps, start=1):
            ax = axes[row, col]
            show_image(ax, ctx.images[i], alpha=1.0)
            ax.imshow(maps[label][col], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    for row, label in enumerate(["input", *maps]):
        axes[row, 0].set_ylabel(label, fontsize=11)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap="jet")
    fig.suptitle(
        f"Class activation maps of the predicted class at layer {ctx.layer_name!s} ({ctx.split} split)\n"
        "red = regions that raise the predicted class's score most",
        fontsize=11,
    )
    fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.6, label="CAM (scaled to each image's max)")
    return [save(fig, ctx.plots / "cam.png")]
