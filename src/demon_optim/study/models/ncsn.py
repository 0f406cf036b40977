"""A noise-conditional score network (NCSN) after Song & Ermon (2019), "Generative Modeling
by Estimating Gradients of the Data Distribution", written from the paper's description
(its appendix on the architecture); no code of the authors' was used.

``NCSN(channels, ngf, levels)(x, i)`` estimates the score ``grad_x log q_sigma_i(x)`` of the
data perturbed by Gaussian noise of level ``sigma_i``: an output of the input's shape for
images ``x`` ``[B, C, H, W]`` (pixels in [0, 1] plus noise) and noise-level indices ``i``
``[B]`` (int64 in ``0..levels-1``). The level enters only through the normalisation layers.

Architecture (the paper's RefineNet-style U-Net):

- conditional instance normalisation++ (:class:`CondInstanceNormPP`) everywhere a
  normalisation is, ELU activations, 3x3 convolutions;
- encoder: a 3x3 convolution to ``ngf`` channels, then four stages of two pre-activation
  residual blocks (norm, ELU, conv, norm, ELU, conv, plus the shortcut): stage 1 at ``ngf``
  channels and full resolution; stage 2 goes to ``2 ngf`` channels and halves the
  resolution (mean pooling after the block's second convolution and on its 1x1-conv
  shortcut); stages 3 and 4 keep that resolution and use dilated convolutions (dilation 2
  and 4) instead of further subsampling, as the paper replaces subsampling by dilation in
  every stage but the first one that subsamples;
- decoder: four cascaded RefineNet blocks (Lin et al., 2017), from the deepest stage up.
  Each block takes its stage's features and (except the deepest) the previous block's
  output; every input goes through two residual conv units (norm, ELU, conv, twice, plus
  the identity); multi-resolution fusion maps each input by norm and a 3x3 conv to the
  block's width, upsamples it bilinearly to the largest input's size and sums; chained
  residual pooling (ELU, then two stages of norm, 5x5 mean pooling with stride 1 as the
  paper uses instead of max pooling, 3x3 conv, each stage's output added to the sum) and
  one output residual conv unit finish the block. Widths: ``2 ngf`` for the two deep
  blocks, ``ngf`` for the two shallow ones;
- head: norm, ELU, 3x3 conv to the image's channels.

Simplifications (said here so nobody mistakes it for a port): one output residual conv unit
in every block (RefineNet's last block has three); no adaptive depth for other image sizes
(the network works on any ``H, W`` divisible by 2: 28x28 and 32x32 here); the input is
mapped ``x -> 2x - 1`` by a fixed first step so that [0, 1] images are centred (an affine
change the first convolution could learn, kept for a better-conditioned start); parameters
of the normalisation start at ``gamma = alpha = 1 + 0.02 N(0, 1)``, ``beta = 0`` (the paper
does not say). The output is the score itself (as in the 2019 paper; the loss weights it
by ``sigma^2``) unless ``output_sigmas`` is given: then it is divided by ``sigma_i``, as in
Song & Ermon's 2020 follow-up ("Improved Techniques for Training Score-Based Generative
Models"), so the network's own output has the same scale (about ``-z``) at every level. On
a short CPU budget the 2019 form cannot learn the ~100x larger scores of the lowest level
(measured: after 400 steps its scores at ``sigma = 0.01`` are ~9 where ~80 are needed, and
the samples stay noise), so the CPU tasks use the scaling; ``cifar10-ncsn`` does not.

Size (10 levels): ``ngf = 16`` on 28x28x1 has 497,745 parameters, ``ngf = 32`` 1,881,249,
``ngf = 128`` on 32x32x3 (the paper's CIFAR-10 width) 28,787,843. Cost on one CPU thread
(torch 2.13, process time): ``ngf = 16``, 28x28: ~7.7 ms per image forward (chunks of
128-250), ~1.4 s per training step of 64; ``ngf = 128``, 32x32x3: ~0.26 s per image forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the variance floor of every normalisation (inside the square roots)
NORM_EPS = 1e-5


class CondInstanceNormPP(nn.Module):
    """Conditional instance normalisation++ (the paper's CondInstanceNorm++).

    For channel ``k`` of one example at noise level ``i``::

        z_k = gamma[i, k] (x_k - mu_k) / s_k + beta[i, k] + alpha[i, k] (mu_k - m) / v

    ``mu_k``, ``s_k``: the mean and standard deviation of ``x_k`` over its ``H x W``
    positions; ``m``, ``v``: the mean and standard deviation of the ``mu_k`` over the
    channels. Both standard deviations are population ones (divide by the count) with
    :data:`NORM_EPS` added to the variance. The ``alpha`` term gives back the relative
    channel means that plain instance normalisation throws away (colour shifts).
    """

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1 + 0.02 * torch.randn(levels, channels))
        self.alpha = nn.Parameter(1 + 0.02 * torch.randn(levels, channels))
        self.beta = nn.Parameter(torch.zeros(levels, channels))

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        # two-pass moments from the centred values (torch.var is ~8x slower on a CPU thread)
        mu = x.mean(dim=(2, 3), keepdim=True)
        centred = x - mu
        s = (centred.square().mean(dim=(2, 3), keepdim=True) + NORM_EPS).sqrt()
        m = mu.mean(dim=1, keepdim=True)
        v = ((mu - m).square().mean(dim=1, keepdim=True) + NORM_EPS).sqrt()
        gamma, beta, alpha = (
            p[levels][:, :, None, None] for p in (self.gamma, self.beta, self.alpha)
        )
        return gamma * centred / s + beta + alpha * (mu - m) / v


def mean_pool5(x: torch.Tensor) -> torch.Tensor:
    """5x5 mean pooling, stride 1, zero padding 2 counted in the mean (``avg_pool2d(x, 5,
    1, 2)``), as a fixed depthwise convolution: the same values, ~8x faster on a CPU."""
    weight = x.new_full((x.shape[1], 1, 5, 5), 1 / 25)
    return F.conv2d(x, weight, padding=2, groups=x.shape[1])


def _conv3x3(c_in: int, c_out: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation)


class ResidualBlock(nn.Module):
    """Pre-activation residual block conditioned by CIN++; optional 2x mean-pool subsampling
    (after the second conv and on the 1x1-conv shortcut) and dilation."""

    def __init__(
        self, c_in: int, c_out: int, levels: int, *, down: bool = False, dilation: int = 1
    ) -> None:
        super().__init__()
        self.norm1 = CondInstanceNormPP(c_in, levels)
        self.conv1 = _conv3x3(c_in, c_out, dilation)
        self.norm2 = CondInstanceNormPP(c_out, levels)
        self.conv2 = _conv3x3(c_out, c_out, dilation)
        self.down = down
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if down or c_in != c_out else None

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.elu(self.norm1(x, levels)))
        h = self.conv2(F.elu(self.norm2(h, levels)))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.down:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class ResidualConvUnit(nn.Module):
    """RefineNet's RCU: ``x + conv(ELU(norm(conv(ELU(norm(x))))))``, width kept."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.norm1 = CondInstanceNormPP(channels, levels)
        self.conv1 = _conv3x3(channels, channels)
        self.norm2 = CondInstanceNormPP(channels, levels)
        self.conv2 = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.elu(self.norm1(x, levels)))
        return x + self.conv2(F.elu(self.norm2(h, levels)))


class ChainedResidualPooling(nn.Module):
    """``x = ELU(x)``, then ``stages`` times ``p = conv(meanpool5(norm(p))); x = x + p``."""

    def __init__(self, channels: int, levels: int, stages: int = 2) -> None:
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNormPP(channels, levels) for _ in range(stages))
        self.convs = nn.ModuleList(_conv3x3(channels, channels) for _ in range(stages))

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        x = F.elu(x)
        path = x
        for norm, conv in zip(self.norms, self.convs, strict=True):
            path = conv(mean_pool5(norm(path, levels)))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """A RefineNet block: 2 RCUs per input, multi-resolution fusion (several inputs),
    chained residual pooling, one output RCU; output at the largest input's resolution."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, levels: int) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(
            nn.ModuleList(ResidualConvUnit(c, levels) for _ in range(2)) for c in in_channels
        )
        # fusion: each input to the block's width (a single input of another width too)
        fuse = len(in_channels) > 1 or in_channels[0] != channels
        self.fuse_norms = (
            nn.ModuleList(CondInstanceNormPP(c, levels) for c in in_channels) if fuse else None
        )
        self.fuse_convs = (
            nn.ModuleList(_conv3x3(c, channels) for c in in_channels) if fuse else None
        )
        self.pool = ChainedResidualPooling(channels, levels)
        self.out = ResidualConvUnit(channels, levels)

    def forward(self, inputs: list[torch.Tensor], levels: torch.Tensor) -> torch.Tensor:
        paths = []
        for x, units in zip(inputs, self.adapt, strict=True):
            for unit in units:
                x = unit(x, levels)
            paths.append(x)
        if self.fuse_norms is None:
            h = paths[0]
        else:
            size = max((p.shape[-2:] for p in paths), key=lambda s: s[0] * s[1])
            h = 0
            for p, norm, conv in zip(paths, self.fuse_norms, self.fuse_convs, strict=True):
                p = conv(norm(p, levels))
                if p.shape[-2:] != size:
                    p = F.interpolate(p, size=tuple(size), mode="bilinear", align_corners=True)
                h = h + p
        return self.out(self.pool(h, levels), levels)


class NCSN(nn.Module):
    """The score network: ``forward(x [B, C, H, W], levels [B]) -> score [B, C, H, W]``.

    ``channels``: the image's channels (1 or 3); ``ngf``: the base width (the paper: 128
    for CIFAR-10; 16 or 32 make it affordable on a CPU); ``levels``: the number of noise
    levels ``L`` (one row of every normalisation's parameters per level).
    """

    def __init__(
        self,
        channels: int,
        ngf: int = 64,
        levels: int = 10,
        output_sigmas: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.channels, self.ngf, self.levels = channels, ngf, levels
        # optional: the output divided by sigma_i (see the module docstring)
        if output_sigmas is not None:
            if len(output_sigmas) != levels:
                raise ValueError(
                    f"output_sigmas: got {len(output_sigmas)} values for {levels} levels"
                )
            self.register_buffer("output_sigmas", torch.as_tensor(output_sigmas).float().clone())
        else:
            self.output_sigmas = None
        wide = 2 * ngf
        self.begin = _conv3x3(channels, ngf)
        self.stages = nn.ModuleList(
            [
                nn.ModuleList([ResidualBlock(ngf, ngf, levels), ResidualBlock(ngf, ngf, levels)]),
                nn.ModuleList(
                    [
                        ResidualBlock(ngf, wide, levels, down=True),
                        ResidualBlock(wide, wide, levels),
                    ]
                ),
                nn.ModuleList(
                    [
                        ResidualBlock(wide, wide, levels, dilation=2),
                        ResidualBlock(wide, wide, levels, dilation=2),
                    ]
                ),
                nn.ModuleList(
                    [
                        ResidualBlock(wide, wide, levels, dilation=4),
                        ResidualBlock(wide, wide, levels, dilation=4),
                    ]
                ),
            ]
        )
        self.refine = nn.ModuleList(
            [
                RefineBlock((wide,), wide, levels),  # deepest stage alone
                RefineBlock((wide, wide), wide, levels),
                RefineBlock((wide, wide), ngf, levels),
                RefineBlock((ngf, ngf), ngf, levels),
            ]
        )
        self.end_norm = CondInstanceNormPP(ngf, levels)
        self.end = _conv3x3(ngf, channels)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = self.begin(2 * x - 1)
        features = []
        for blocks in self.stages:
            for block in blocks:
                h = block(h, levels)
            features.append(h)
        h = self.refine[0]([features[3]], levels)
        for block, skip in zip(self.refine[1:], reversed(features[:3]), strict=True):
            h = block([skip, h], levels)
        out = self.end(F.elu(self.end_norm(h, levels)))
        if self.output_sigmas is not None:
            out = out / self.output_sigmas[levels].view(-1, 1, 1, 1)
        return out
