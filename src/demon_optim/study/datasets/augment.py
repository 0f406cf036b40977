"""Standard image augmentation on whole batches, driven by a torch.Generator.

``random_crop_flip`` is the CIFAR recipe of He et al. (2016): pad each image by ``p`` pixels
of zeros, take a random crop of the original size (a shift of up to ``p`` pixels each way),
and mirror it left-right with probability 1/2. Done for a whole batch at once,
on any dtype (the uint8 images of the tasks included), with all randomness from the given
generator: a trial that seeds it gets the same augmented batches on every run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """Randomly shifted (by up to ``padding`` px, zero fill) and mirrored copies of ``images``.

    ``images`` is ``[B, C, H, W]``. Output pixel (i, j) of image b is padded pixel
    ``(dy_b + i, dx_b + j)``, or ``(dy_b + i, dx_b + W - 1 - j)`` when image b is flipped,
    with ``dy_b, dx_b`` uniform on ``0..2p`` and the flip a fair coin, drawn in that order
    (offsets, then flips) from ``generator``. ``padding=0, flip=False`` returns the input.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 and not flip:
        return images
    batch, _, height, width = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).tolist()
    flips = torch.rand(batch, generator=generator) < 0.5 if flip else None
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    # A slice per image is ~15x faster on a CPU than one advanced-indexing gather.
    out = torch.stack(
        [
            padded[i, :, dy : dy + height, dx : dx + width]
            for i, (dy, dx) in enumerate(zip(*offsets, strict=True))
        ]
    )
    if flips is not None:
        flipped = flips.nonzero().flatten()
        out[flipped] = out[flipped].flip(-1)
    return out
