# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (mist)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Patch extraction
#
# Section 4 of the paper covers the first half of a MIST: how an image becomes K square patches. Three
# operations run one after the other. The multiscale heatmap network $\mathcal{H}_\eta$ scores every pixel
# at every scale; the top-K extractor $\mathcal{E}_K$ reads K patch centres and sizes off those scores; the
# sampler $\mathcal{S}$ cuts the patches out by bilinear interpolation. Only $\mathcal{H}_\eta$ has weights.
# This chapter opens each of the three on an MNIST-hard test image, using the pretrained model
# `reconstruct-mnist-hard-mist`.
#
# **What you will learn**
#
# - how one small fully convolutional network produces a heatmap over positions *and* scales, by running the
#   same weights on resized copies of the image;
# - why the local spatial softmax borrowed from LF-Net behaves like a soft non-maximum suppression, and what
#   its window and strength do;
# - how $\mathcal{E}_K$ reads the K centres (eq. 3) and their scales (eqs. 2 and 4) from the heatmap, and
#   why the normalisation of eq. (2) has to wait until the locations are chosen;
# - how the sampler $\mathcal{S}$ of eq. (5) reads a patch at a fractional position and size, and why it can
#   pass gradients back to $(x, y, s)$.

# %% [markdown]
# ## Setup
#
# Everything runs on the CPU with a fixed seed and fixed test images, so the printed numbers are the same on
# every run; `device="cuda"` below runs the chapter on a GPU (the figures then differ slightly). The model
# is the book's MNIST-hard reconstruction model (chapter 1 shows how it was trained).

# %%
# %matplotlib inline
import torch
import torch.nn.functional as F
from IPython.display import display

from mistlib.data import MNISTHard
from mistlib.experiments import pretrained
from mistlib.extract import topk_extract
from mistlib.heatmap import local_spatial_softmax
from mistlib.sampler import sample_patches
from mistlib.viz.extraction import (
    heatmap_net_at,
    sample_points,
    scale_space,
    scales_widget,
    show_normalisation,
    show_sampler,
    show_scale_maps,
    show_scale_space,
    show_soft_nms,
    show_topk,
    topk_widget,
)

torch.manual_seed(0)
device = "cpu"  # "cuda" runs the networks on a GPU

model, experiment, meta = pretrained("reconstruct-mnist-hard-mist", device=device)
config = model.config
test = MNISTHard(split="test", size=16, seed=1)  # fresh test images, never seen in training
image = test.images[0]  # (C, H, W) = (1, 80, 80)
images = image[None].to(device)  # (B, C, H, W) with B = 1
print("scales (px):", config.scales, " K:", config.k, " softmax window:", config.softmax_kernel,
      " strength:", config.softmax_strength)  # fmt: skip
print("heatmap trunk:", config.heatmap_channels, "channels,", config.heatmap_blocks, "ResNet blocks")
print("training recipe:", experiment.train)

# %% [markdown]
# ## 4.1 The multiscale heatmap network $\mathcal{H}_\eta$
#
# Digits in MNIST hard come in different sizes, so a patch needs a size as well as a centre. The paper
# handles this with a small, sparse scale space: S discrete scales, with sizes in between recovered later by
# interpolation (eq. 4). Rather than one network per scale, or one output channel per scale, the *same*
# fully convolutional network runs on the image resized once per scale, and each output is brought back to
# $H \times W$. Stacking the S maps gives the heatmap tensor $\mathbf{h}$ of shape $H \times W \times S$
# (in `mistlib`: `(B, S, H, W)`). Because the weights are shared, the network cannot simply prefer one scale.
# The paper's trunk is 4 ResNet blocks of two $3 \times 3$ convolutions with 32 channels and no downsampling
# (§4); the setup cell printed what the shipped checkpoint has.
#
# In `mistlib` a scale is a patch side $s$ in pixels. The trunk is tuned to objects of `reference_size`
# pixels, so for scale $s$ the image is resized by the factor `reference_size / s`: a larger window shrinks
# the image, so that whatever fills that window reaches the trunk at its reference size.

# %%
net = model.heatmap_net
for s, factor in zip(config.scales, net.resize_factors(), strict=True):
    side = round(80 * factor)
    print(f"scale {s:5.1f} px -> resize factor {factor:.3f} -> the trunk sees {side} x {side} pixels")

# %% [markdown]
# `HeatmapNet.scores` returns the raw per-scale maps $\mathcal{H}_\eta(I_s)$, upsampled to the image;
# calling the network returns them after the local spatial softmax of the next section. The figure shows
# both, one column per scale, with the windows that $\mathcal{E}_K$ will choose on the left.

# %%
with torch.no_grad():
    scores = net.scores(images)  # (1, S, H, W), raw
    heatmap = net(images)  # (1, S, H, W), after the local spatial softmax
    keypoints = topk_extract(heatmap, config.k, model.scales, nms=config.nms)  # (1, K, 3) as (x, y, s)
fig = show_scale_maps(image, scores[0], heatmap[0], config.scales, keypoints[0])
fig

# %% [markdown]
# A check that the figure shows what the text says: one scale redone by hand (resize, trunk, resize back)
# gives the same map as the library, and a copy of the network at five scales has exactly as many weights as
# the original at three, because all scales share them.

# %%
with torch.no_grad():
    s_index = len(config.scales) - 1  # the largest scale
    factor = net.resize_factors()[s_index]
    small = F.interpolate(images, size=(round(80 * factor),) * 2, mode="bilinear", align_corners=False,
                          antialias=True)  # fmt: skip
    by_hand = F.interpolate(net.trunk(small), size=(80, 80), mode="bilinear", align_corners=False)
assert torch.allclose(by_hand[:, 0], scores[:, s_index], atol=1e-6)
five = heatmap_net_at(net, scales=(12.0, 16.0, 20.0, 25.0, 32.0))
assert sum(p.numel() for p in five.parameters()) == sum(p.numel() for p in net.parameters())
print("parameters of H_eta:", sum(p.numel() for p in net.parameters()), "whatever the number of scales")

# %% [markdown]
# ## 4.2 The local spatial softmax: a soft non-maximum suppression
#
# A raw score map is smooth: a digit produces a blob of high scores, not a single bright pixel. Taking the K
# highest pixels of such a map would return K neighbours of the strongest blob. Following LF-Net, the paper
# sharpens each scale's map with a *local spatial softmax* over a $15 \times 15$ window (§4). With $v$ the raw
# score map, $N(p)$ the window centred on pixel $p$ and $M(p)$ the largest score in it, every pixel is first
# compared with the top of its own window, then divided by the total of its window:
#
# $$e(p) = \exp\big(\beta\,(v(p) - M(p))\big), \qquad h(p) = \frac{e(p)}{\sum_{q \in N(p)} e(q) + \epsilon},$$
#
# where $\beta$ is the strength (10 in the authors' code) and $\epsilon = 10^{-6}$. This is how LF-Net
# implements it, and it is close to, but not the same as, a plain softmax over the window: each neighbour
# $q$ enters with its *own* window's maximum. Since $e(p) \le 1$ with equality exactly at a local maximum,
# $h$ lies in $[0, 1]$. A pixel that dominates its window comes out close to 1; a pixel with a stronger
# neighbour inside its window is pushed towards 0. In fact **at most one pixel of any window can exceed
# 1/2**: if $p$ and $p'$ lie in each other's windows and both exceed 1/2, then each one's $e$ is larger than
# the rest of its own denominator, which contains the other's, so $e(p) > e(p')$ and $e(p') > e(p)$ at once.
# That is a non-maximum suppression, but a soft one: it is differentiable, and two picks closer than the
# window are discouraged, not forbidden.
#
# The profile on the right follows one image row through the strongest pixel: the raw score (grey) is a
# broad bump, the softmax (blue) keeps a narrow peak where the bump is highest.

# %%
fig = show_soft_nms(scores[0], heatmap[0])
fig

# %% [markdown]
# Three checks: the network's output is exactly the local softmax of its raw scores; a brute-force version
# with explicit loops over each window agrees with the library on a small map; and the "at most one above
# 1/2 per window" rule holds at every scale. The trained heatmap is soft (its largest value is printed), so
# the rule is checked where it bites: on the same scores with a much sharper softmax (strength 200).

# %%
assert torch.allclose(local_spatial_softmax(scores, config.softmax_kernel, config.softmax_strength), heatmap)
assert float(heatmap.min()) >= 0 and float(heatmap.max()) <= 1

toy = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(0))
r, beta = 2, 10.0  # a 5 x 5 window
padded = F.pad(toy, (r, r, r, r), mode="replicate")[0, 0]  # edge values repeated, as mistlib does
tops = torch.zeros(9, 9)  # M(p): the largest score in the window centred on each pixel
for i in range(9):
    for j in range(9):
        tops[i, j] = padded[i : i + 2 * r + 1, j : j + 2 * r + 1].max()
e = F.pad(torch.exp(beta * (toy[0, 0] - tops))[None], (r, r, r, r), mode="replicate")[0]  # e(q), padded
brute = torch.zeros(9, 9)
for i in range(9):
    for j in range(9):
        brute[i, j] = e[i + r, j + r] / (e[i : i + 2 * r + 1, j : j + 2 * r + 1].sum() + 1e-6)
assert torch.allclose(brute, local_spatial_softmax(toy, 2 * r + 1, beta)[0, 0], atol=1e-6)

half = config.softmax_kernel // 2
print(f"largest value of the model's heatmap: {float(heatmap.max()):.2f}")  # soft: the rule has nothing to do
sharp = local_spatial_softmax(scores, config.softmax_kernel, 200.0)  # the same scores, a much sharper softmax
pairs = 0  # pairs of pixels above 1/2 that were checked
for s_index, s in enumerate(config.scales):
    strong = (sharp[0, s_index] > 0.5).nonzero().float()  # (n, 2) rows and columns above 1/2
    gaps = (strong[:, None] - strong[None]).abs().amax(-1)  # (n, n) Chebyshev distances
    assert bool((gaps[~torch.eye(len(strong), dtype=torch.bool)] > half).all())
    pairs += len(strong) * (len(strong) - 1) // 2
    print(f"strength 200, scale {s:5.1f} px: {len(strong)} pixels above 1/2, no two within {half} px")
assert pairs > 0  # so the check is not vacuous

# %% [markdown]
# ## 4.3 Top-K extraction: eqs. (2)–(4)
#
# With the suppression done by the softmax, the extractor $\mathcal{E}_K$ is simple. The **locations** are
# the K highest pixels of the heatmap after a maximum over scales (eq. 3):
#
# $$\{(x_k, y_k)\} = \mathrm{TOPK}\big(\max_s \mathbf{h}_s\big).$$
#
# §3 places an explicit non-maximum suppression between the heatmap and the top-K, and the authors' public
# code keeps only the pixels that are the largest of their $5 \times 5$ neighbourhood. So does
# `mistlib` by default (`MISTConfig.nms = 5`); our MNIST MIST models use a wider $13 \times 13$ window
# and our Gabor model $9 \times 9$ (appendix chapter 9, §9.6 and §9.11). The end of this section shows why
# the softmax alone does not suffice.
#
# The **scale** of each patch is a weighted mean of the S scales, the weights being the heatmap's responses
# at that pixel (eq. 4), made to sum to one by the normalisation of eq. (2):
#
# $$s_k = \sum_s \frac{\mathbf{h}_s(x_k, y_k)}{\sum_{s'} \mathbf{h}_{s'}(x_k, y_k) + \epsilon}\; s.$$
#
# So a patch can take any size between the smallest and the largest scale, even with only S of them.
# `topk_extract` returns `(B, K, 3)` rows $(x, y, s)$ in decreasing order of score; below it is rebuilt from
# the two equations and compared.

# %%
k = config.k
peak_map = heatmap.amax(dim=1)  # (1, H, W): max over scales, eq. (3)
is_max = peak_map == F.max_pool2d(peak_map, config.nms, 1, config.nms // 2)  # (1, H, W) local maxima
assert int(is_max.sum()) >= k  # enough of them: no other pixel has to fill a place
peak, is_max = peak_map.flatten(1), is_max.flatten(1)  # (1, H * W)
index = peak.where(is_max, torch.tensor(-1.0)).topk(k).indices[0]  # (K,) the K highest local maxima
rows, cols = index // 80, index % 80
weights = heatmap[0][:, rows, cols]  # (S, K): the responses at each chosen pixel
scale_by_hand = (weights * model.scales[:, None]).sum(0) / (weights.sum(0) + 1e-6)  # eqs. (2) and (4)
assert torch.equal(keypoints[0, :, 0], cols.float()) and torch.equal(keypoints[0, :, 1], rows.float())
assert torch.allclose(keypoints[0, :, 2], scale_by_hand)
for rank, (x, y, s) in enumerate(keypoints[0].tolist(), start=1):
    score = float(peak[0, index[rank - 1]])
    print(f"pick {rank}: centre ({x:2.0f}, {y:2.0f}), scale {s:4.1f} px, score {score:.3f}")

# %% [markdown]
# ### Scrub K
#
# K is the only supervision MIST receives for reconstruction (§3), and at test time it is just a number we
# pass to $\mathcal{E}_K$. Move the slider to see which windows are chosen, and the patches $\mathcal{S}$
# cuts out of them, for K from 1 to 20. The heatmap is computed once; each K only re-runs the extractor
# and the sampler. Picks come in decreasing order of score, so raising K only adds windows at the end. The
# figure of every K is computed in advance, so the slider works on the static website too; in JupyterLab the
# kernel also redraws each change. The cell after the widget draws the figure for the model's K.

# %%
topk = topk_widget(model, image, k=config.k, max_k=20)
display(topk)

# %%
patches = sample_patches(images, keypoints, size=config.patch_size)  # (1, K, C, P, P)
fig = show_topk(image, keypoints[0], patches[0], title=f"K = {k}")
fig

# %% [markdown]
# What the figure should make plain, checked for K = 1 to 20: the K windows sit on K *different* pixels and
# give K different patches (unless two windows both fall on empty background); the picks are exactly the K
# highest local maxima of $\max_s \mathbf{h}_s$ (no maximum left out scores higher than one taken); every
# scale stays within the scale space, because eq. (4) is a weighted mean; and the picks for a smaller K are
# the first picks for a larger one. K cannot exceed the number of pixels, and the extractor says so.

# %%
top20 = topk_extract(heatmap, 20, model.scales, nms=config.nms)
for kk in range(1, 21):
    picks = topk_extract(heatmap, kk, model.scales, nms=config.nms)[0]  # (K, 3)
    cut = sample_patches(images, picks[None], size=config.patch_size)[0].flatten(1)  # (K, C * P * P)
    assert len({(x, y) for x, y, _ in picks.tolist()}) == kk  # K distinct centres
    inked = cut.amax(1) > 0  # (K,) two windows on empty background would both be blank
    assert all(not torch.equal(cut[a], cut[b]) for a in range(kk) for b in range(a) if inked[a] or inked[b])
    taken = torch.zeros(80 * 80, dtype=torch.bool)
    taken[(picks[:, 1] * 80 + picks[:, 0]).long()] = True
    skipped = peak[0][~taken & is_max[0]]  # the local maxima left out (none once K takes them all)
    if len(skipped):
        # the K highest local maxima, none skipped
        assert float(peak[0][taken].min()) >= float(skipped.max())
    low, high = min(config.scales) - 1e-4, max(config.scales) + 1e-4
    assert low <= float(picks[:, 2].min()) and float(picks[:, 2].max()) <= high  # eq. (4) is a mean
    # a smaller K gives the first picks of a larger one: the same centres, the same scales up to rounding
    assert torch.equal(picks[:, :2], top20[0, :kk, :2])
    torch.testing.assert_close(picks[:, 2], top20[0, :kk, 2], rtol=1e-5, atol=1e-4)
try:
    topk_extract(heatmap, 80 * 80 + 1, model.scales)
except ValueError as error:
    print("K = 6401:", error)


def close_pairs(picks: torch.Tensor, within: int) -> int:
    """Pairs of picks (K, 3) at most ``within`` px apart along both axes."""
    gaps = (picks[:, None, :2] - picks[None, :, :2]).abs().amax(-1)  # (K, K) Chebyshev distances
    return int((gaps <= within).triu(1).sum())


plain20 = topk_extract(heatmap, 20, model.scales)[0]  # (20, 3) eq. (3) with the softmax alone
for name, picks in (("softmax alone", plain20), (f"{config.nms} x {config.nms} NMS", top20[0])):
    print(f"top 20 picks, {name}: {close_pairs(picks, half)} pairs within {half} px, "
          f"{close_pairs(picks, 1)} pairs of neighbouring pixels")  # fmt: skip
maxima = int(is_max[0].sum())  # past them, the extractor fills in with the best other pixels
print(f"local maxima of {config.nms} x {config.nms} windows in this heatmap: {maxima}")
assert close_pairs(top20[0, : min(20, maxima)], config.nms // 2) == 0

# %% [markdown]
# How soft is the suppression? The local softmax can only separate peaks as well as the raw scores do. Where
# the scores around a peak differ from it by much less than $1/\beta$, its neighbours keep a good share of
# the window's mass, and with it a chance to be picked ahead of a weaker digit elsewhere. A briefly trained
# network, such as the compact model used here, produces such low-contrast peaks; the last lines printed
# above count the pairs of top-20 picks that lie within half a window of each other. Training makes it
# worse: lifting (chapter 6) teaches the network to answer every keypoint with a peak, and a peak it has
# learned is a few pixels wide, so with the softmax alone the pixels around the strongest digit outrank
# every other digit and several of the K picks land on one object. Without the hard suppression before the
# top-K our trained models did exactly that (appendix chapter 9); with it, a neighbouring pixel is never a
# local maximum. (When a heatmap has fewer local maxima than K, as the last line counts, the extractor fills
# the remaining places with the best other pixels, and those may lie next to a pick.) The strength control
# of §4.5 lets you sharpen or flatten the peaks and watch the plain top-K picks spread out or crowd together.

# %% [markdown]
# ## 4.4 A subtlety: where eq. (2) belongs
#
# Read literally, §4 normalises the whole heatmap over scales first (eq. 2) and then takes the top K of the
# normalised map (eq. 3). That order does not work, and `mistlib.extract.topk_extract` does not follow it
# (its docstring explains why). After eq. (2), the S values of any pixel whose responses are not negligible
# sum to one, so their maximum is at least $1/S$ — on the background as much as on a digit. Worse, a pixel
# where one scale responds faintly and the others hardly at all gets a value close to 1, more than the
# centre of a real digit that all scales see. The normalised map tells *which scale* dominates a pixel, not
# *how strongly* something is there, so its top K would be scattered over the image.
#
# The normalisation is only needed to turn eq. (4) into a weighted mean. `topk_extract` therefore takes the
# locations from the raw $\max_s \mathbf{h}_s$ and applies eq. (2) only at the K chosen pixels. Since eq. (4)
# uses nothing but the values at those pixels, the scales are exactly what eq. (2) followed by eq. (4) would
# give. On the left, the picks of `topk_extract` (circles); in the middle, the picks of the literal order
# (crosses); on the right, the values of both maps.

# %%
fig = show_normalisation(heatmap[0], config.scales, k)
fig

# %%
normalised = heatmap / (heatmap.sum(dim=1, keepdim=True) + 1e-6)  # (1, S, H, W): eq. (2) everywhere
num_scales = len(config.scales)
alive = heatmap.sum(dim=1)[0] > 1e-3  # (H, W): pixels whose responses dwarf the epsilon
assert bool((normalised.amax(dim=1)[0][alive] >= (1 / num_scales) * (1 - 1e-3)).all())
literal = normalised.amax(dim=1).flatten(1).topk(k).indices[0]  # (K,) eq. (2) then eq. (3)
shared = len(set(literal.tolist()) & set(index.tolist()))
print(f"eq. (2) first: max over scales >= 1/S = {1 / num_scales:.3f} on {alive.float().mean():.1%} of the "
      f"pixels; its top {k} share {shared} of {k} pixels with topk_extract's")  # fmt: skip
# the scales of topk_extract are those of the literal eq. (2) + eq. (4) at the same pixels
moment = (normalised[0][:, rows, cols] * model.scales[:, None]).sum(0)  # (K,)
assert torch.allclose(moment, keypoints[0, :, 2], atol=1e-4)

# %% [markdown]
# ## 4.5 Playing with the scale space and the softmax
#
# The second widget changes what $\mathcal{H}_\eta$ and the softmax are asked to do: how many scales, over
# which range of patch sides (spread geometrically), and the window and strength of the local softmax. Keep
# in mind what is and is not retrained. The network was trained at its own scales and softmax settings
# (printed in the setup). Other scales re-run the *same* trunk at other resize factors: the network is
# fully convolutional, so this works, but its weights were only ever tuned at the trained factors. The
# window and strength are applied to the raw scores `HeatmapNet.scores` returns, with no weights involved. A
# narrow window lets several picks crowd onto one digit; a wide one can suppress a small digit next to a
# larger one; a low strength flattens every peak. On the static website only the number of scales works:
# its five figures are computed in advance, at the trained range, window and strength. The range, window
# and strength take any value, so they redraw only in JupyterLab, where a kernel runs. Below the widget, the
# same figure is drawn for five scales from 12 to 32 pixels with a $7 \times 7$ window.

# %%
scales_explorer = scales_widget(model, image)
display(scales_explorer)

# %%
five_scales = scale_space(5, 12.0, 32.0)
fig = show_scale_space(model, image, five_scales, softmax_kernel=7, softmax_strength=10.0)
fig

# %% [markdown]
# Checks of what the widget does. Re-running the copied network at the trained scales and settings
# reproduces the model's own heatmap. With a $1 \times 1$ window there is nothing to suppress: every pixel is
# the maximum of its own window, the softmax returns $1/(1 + \epsilon)$ everywhere, and the top K say
# nothing about the image. Whatever the scale space, each chosen scale stays inside it.

# %%
same = heatmap_net_at(net, scales=config.scales, softmax_kernel=config.softmax_kernel,
                      softmax_strength=config.softmax_strength)  # fmt: skip
with torch.no_grad():
    assert torch.allclose(same(images), heatmap)
    flat = local_spatial_softmax(scores, 1, config.softmax_strength)
    assert torch.allclose(flat, torch.full_like(flat, 1 / (1 + 1e-6)))
    wide = heatmap_net_at(net, scales=five_scales)
    picks5 = topk_extract(wide(images), k, wide.scales)[0]
assert five_scales[0] - 1e-4 <= float(picks5[:, 2].min())
assert float(picks5[:, 2].max()) <= five_scales[-1] + 1e-4
print("five scales:", five_scales)
print("chosen scales:", [round(v, 1) for v in picks5[:, 2].tolist()])

# %% [markdown]
# ## 4.6 The bilinear sampler $\mathcal{S}$ (eq. 5)
#
# A patch is fully described by $\mathbf{x}_k = (x_k, y_k, s_k)$, and eq. (5) turns it into a tensor by
# bilinear interpolation, as in a spatial transformer restricted to a shift and a uniform scale. In
# `mistlib` the window of side $s$ is cut into $P \times P$ cells and patch pixel $(i, j)$ reads the image at
# the centre of cell $(i, j)$:
#
# $$u_j = x - \tfrac{s}{2} + \big(j + \tfrac12\big)\tfrac{s}{P}, \qquad
#   v_i = y - \tfrac{s}{2} + \big(i + \tfrac12\big)\tfrac{s}{P}.$$
#
# A sample point rarely falls on a pixel centre, so its value blends the four nearest pixels, weighted by
# how close it is to each (zero outside the image). The figure shows the $8 \times 8$ sample points of the
# first pick and the $8 \times 8$ patch they give; the model itself uses $P = 32$.

# %%
fig = show_sampler(image, keypoints[0, 0], size=8)
fig

# %% [markdown]
# Rebuilding eq. (5) by hand at those 64 points — four neighbours, four weights — gives the library's patch.
# And because the blend weights depend smoothly on $(x, y, s)$, the patch has a gradient with respect to the
# window. Stage 2 of the lifting algorithm (chapter 6) uses exactly that gradient to move patches, while
# the integer outputs of $\mathcal{E}_K$ have none.

# %%
points = sample_points(keypoints[0, 0], 8)  # (P, P, 2) as (x, y)
x0, y0 = points[..., 0].floor().long(), points[..., 1].floor().long()  # top-left neighbours
a, b = points[..., 0] - x0, points[..., 1] - y0  # fractional parts
m = 32  # zero margin: every sample point of a window no larger than the image falls inside it
zero_padded = F.pad(image[0], (m, m, m, m))  # (H + 2m, W + 2m), zeros outside the image
by_hand = ((1 - a) * (1 - b) * zero_padded[y0 + m, x0 + m] + a * (1 - b) * zero_padded[y0 + m, x0 + m + 1]
           + (1 - a) * b * zero_padded[y0 + m + 1, x0 + m]
           + a * b * zero_padded[y0 + m + 1, x0 + m + 1])  # fmt: skip
library = sample_patches(images, keypoints[:, :1], size=8)[0, 0, 0]  # (P, P)
# grid_sample maps each point to [-1, 1] and back: float32 rounding there moves it by ~1e-5 px
assert torch.allclose(by_hand, library, atol=2e-5)

window = keypoints[:, :1].clone().requires_grad_(True)  # (1, 1, 3) as (x, y, s)
sample_patches(images, window, size=config.patch_size).sum().backward()
assert bool(torch.isfinite(window.grad).all()) and float(window.grad.abs().sum()) > 0
print("d(sum of patch) / d(x, y, s):", [round(v, 3) for v in window.grad[0, 0].tolist()])

# %% [markdown]
# ## Summary
#
# - $\mathcal{H}_\eta$ is one small fully convolutional network run on the image resized for each of S scales
#   and brought back to full size; weights shared across scales mean no scale is favoured (§4).
# - The local spatial softmax turns smooth score blobs into isolated peaks: at most one pixel per window can
#   exceed 1/2. It is a soft, differentiable non-maximum suppression, so eq. (3) can simply take the K
#   highest pixels of $\max_s \mathbf{h}_s$.
# - Each patch's scale is the response-weighted mean of the S scales (eq. 4), so sizes between the discrete
#   scales come for free. The normalisation of eq. (2) belongs to that mean: applied to the whole map before
#   choosing locations, it would flatten the heatmap to "which scale wins".
# - The sampler $\mathcal{S}$ (eq. 5) reads a $P \times P$ patch by bilinear interpolation, with gradients
#   with respect to the image and to $(x, y, s)$. $\mathcal{E}_K$ itself has none for the locations, which
#   is why MIST needs the training scheme of chapter 6.
#
# ## Exercises
#
# 1. In the scale-space widget, set the window to 1 and then to 31. Describe the picks in each case and
#    explain them with the formula of §4.2.
#
# <details><summary>Solution</summary>
#
# With a $1 \times 1$ window, the sum in the denominator holds only the pixel itself, so every pixel gets
# $1/(1+\epsilon)$: the heatmap is flat, and which pixels the top K returns says nothing about the image (the
# check cell of §4.5 asserts the flat value). With a $31 \times 31$ window, each pick has to beat every pixel
# within 15 px, more than half a digit's width: strong digits win, and a small or faint digit next to a
# strong one gets suppressed, so some digits receive no window while others receive a second one nearby.
#
# </details>
#
# 2. A pixel has responses $\mathbf{h} = (0.1, 0.3, 0.1)$ at the scales (16, 20, 25) px. Which scale does
#    eq. (4) give it? Would the answer change if all three responses were multiplied by 5? Check with
#    `topk_extract` on a $1 \times 3 \times 1 \times 1$ heatmap.
#
# <details><summary>Solution</summary>
#
# After eq. (2) the weights are $(0.2, 0.6, 0.2)$, so $s = 0.2 \cdot 16 + 0.6 \cdot 20 + 0.2 \cdot 25 = 20.2$
# px. Multiplying all responses by 5 leaves the normalised weights unchanged, so $s$ stays 20.2 (up to the
# $\epsilon$ of eq. 2). In code:
#
# ```python
# h = torch.tensor([0.1, 0.3, 0.1]).view(1, 3, 1, 1)
# topk_extract(h, 1, torch.tensor([16.0, 20.0, 25.0]))[0, 0, 2]      # 20.2
# topk_extract(5 * h, 1, torch.tensor([16.0, 20.0, 25.0]))[0, 0, 2]  # 20.2
# ```
#
# </details>
#
# 3. Build a $2 \times 12 \times 12$ heatmap (two scales) where the literal order of §4.4 — eq. (2) on the
#    whole map, then eq. (3) — picks a background pixel first, while `topk_extract` picks the real peak.
#
# <details><summary>Solution</summary>
#
# Put a strong peak seen by both scales, e.g. `h[:, 3, 3] = 0.9`, and a faint response at a single scale
# elsewhere, e.g. `h[0, 10, 10] = 1e-3`. After eq. (2) the peak becomes $0.9 / 1.8 = 0.5$ at each scale,
# while the faint pixel becomes $10^{-3} / (10^{-3} + 10^{-6}) \approx 1$, so the literal order picks
# $(10, 10)$; `topk_extract` compares the raw maxima, $0.9 > 10^{-3}$, and picks $(3, 3)$.
# `tests/test_viz_extraction.py` draws exactly this case with `show_normalisation`.
#
# </details>
