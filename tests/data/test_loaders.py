"""In-memory batches: worker threads change nothing but speed; whole images pack without loss."""

from __future__ import annotations

import numpy as np
import torch

from fastcls.data.images import Preprocessing
from fastcls.data.loaders import Batches, DecodedSplit, PackedImages, channel_stats, packed_channel_stats
from tests_support import digit_images


def test_workers_prepare_the_same_batches_in_the_same_order():
    images, labels = digit_images(per_class=6, classes=4, size=16)
    pixels = torch.from_numpy(np.stack(images)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    split = DecodedSplit(pixels, torch.tensor([int(x) for x in labels]), [], [])
    prep = Preprocessing(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    runs = []
    for workers in (0, 1, 3):
        batches = Batches(split, prep, 5, shuffle=True, drop_last=True, seed=9, workers=workers)
        runs.append([(x.clone(), y.clone()) for _ in range(2) for x, y in batches])
    assert len(runs[0]) == 2 * (24 // 5)
    for other in runs[1:]:
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(runs[0], other, strict=True))
    assert not torch.equal(runs[0][0][1], runs[0][4][1])  # the second epoch is shuffled anew


def test_packed_images_keep_every_pixel_and_their_channel_statistics():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((5, 9), (7, 4), (6, 6))]
    packed = PackedImages.pack(arrays)
    assert len(packed) == 3 and packed.nbytes == sum(a.size for a in arrays)
    for array, image in zip(arrays, (packed[i] for i in range(3)), strict=True):
        assert image.shape == (3, *array.shape[:2]) and torch.equal(image, torch.from_numpy(array).permute(2, 0, 1))
    fixed = torch.from_numpy(np.stack([rng.integers(0, 256, (3, 6, 6), dtype=np.uint8) for _ in range(4)]))
    streamed = packed_channel_stats(iter([image.permute(1, 2, 0) for image in fixed]))
    assert np.allclose(streamed, channel_stats(fixed), atol=1e-5)
