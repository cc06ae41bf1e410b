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
# # 2. Related work
#
# Section 2 of the paper sorts earlier work by one question: *how does a method deal with several instances
# in one image?* This chapter draws each answer on the same MNIST-hard test image, so that the families can
# be compared at a glance. Where the library implements a method (a grid of windows, channel-wise heatmaps,
# MIST itself) the figure runs real code. The other families get a schematic drawing of the idea on the
# real image, labelled as such.
#
# **What you will learn**
#
# - the five families of §2 — grid-based, heatmap-based, sequential, knowledge transfer, weakly supervised —
#   and how each one localises instances;
# - what supervision each family needs, and which assumption each one makes that MNIST hard breaks;
# - where MIST sits among them: one heatmap for all instances, read by a top-K selection.

# %% [markdown]
# ## The map
#
# | Family (§2) | Localises instances by | Needs | Weak spot with many look-alike instances |
# |---|---|---|---|
# | Grid-based | fixed cells, each answering for what is centred in it | boxes, labels | two in one cell |
# | One channel per point | K maps, each reduced to one point | often nothing | which instance is whose |
# | One heatmap + top-K | the K strongest peaks of one map | varies | no gradient to the positions |
# | Sequential | one window per step of a recurrent network | nothing or labels | long sequences |
# | Knowledge transfer | a detector trained on other, labelled data | labelled source | that extra data |
# | Weakly supervised | proposals from a fixed rule, scored | image-level labels | the fixed proposals |
#
# MIST belongs to the third row and removes its obstacle by lifting (chapter 6). Its only supervision for
# reconstruction is K, and for classification the bag of labels of each image.

# %% [markdown]
# ## Setup
#
# One test image of MNIST hard, with its ground-truth boxes and centres (used only to draw the schematics
# and to count), and two pretrained models: MIST and the channel-wise baseline (the grid needs no training
# to be drawn). CPU and fixed seeds, so outputs repeat; `device = "cuda"` would run the models on a GPU.

# %%
# %matplotlib inline
import torch

from mistlib.baselines import grid_keypoints
from mistlib.data import MNISTHard, mnist_digits
from mistlib.experiments import pretrained
from mistlib.extract import topk_extract
from mistlib.metrics import box_iou
from mistlib.viz.pipeline import (
    cell_counts,
    ink_scores,
    select_proposals,
    sequential_diagram,
    show_channelwise,
    show_grid_assignment,
    show_heatmap_picks,
    sliding_proposals,
    transfer_diagram,
    weakly_supervised_diagram,
)

torch.manual_seed(0)
device = "cpu"  # "cuda" runs the models on a GPU

test = MNISTHard(split="test", size=16, seed=1)
item = test[0]
image, boxes, labels, centers = item["image"], item["boxes"], item["labels"], item["centers"]
print("image:", tuple(image.shape), " instances:", len(boxes), " labels:", labels.tolist())

# %% [markdown]
# ## 2.1 Grid-based methods
#
# Region proposal networks and the detectors built on them (§2) cover the image with a fixed lattice of
# cells, or of anchor boxes attached to the cells. Each cell predicts whether an object is centred in it,
# and refines a box from there. Learning that needs ground-truth boxes and labels for every object: these
# methods are fully supervised. The simplest grid method, the "grid" baseline of Table 1
# (`mistlib.baselines.GridMIST`), goes further and never moves its windows at all. It tiles the image with K
# fixed windows and leaves the rest to the task network.
#
# A grid assumes that instances spread out, at most one per cell. Below, the $3 \times 3$ grid of windows
# that `grid_keypoints` gives for K = 9, with the centre of each digit as a dot. Cells holding one centre
# are framed in green. Cells holding two or more, where a one-instance-per-cell model has to miss some
# digits, are shaded red.

# %%
windows = grid_keypoints(9, 80)  # (K, 3) as (x, y, s): a 3 x 3 tiling of the 80 x 80 image
fig = show_grid_assignment(image, windows, centers)
fig

# %%
counts = cell_counts(windows, centers)  # (K,) centres per cell
print("centres per cell (rows first):", counts.tolist())
print("instances a one-per-cell model must miss:", int((counts - 1).clamp(min=0).sum()))
assert int(counts.sum()) == len(centers)  # every centre falls in exactly one cell
assert torch.equal(windows[:, 2], torch.full((9,), 80 / 3))  # fixed, equal windows

# %% [markdown]
# ## 2.2 Heatmap-based methods
#
# Heatmaps locate keypoints, landmarks and body joints (§2). The simplest way to get *several* points from a
# network is to give it one output channel per point and reduce each channel to a single position, for
# instance with a soft argmax: a softmax turns the channel into a distribution over pixels, and its mean is
# the point. This is the "channel-wise" approach of Zhang et al., and the channel-wise baseline of Tables 1
# and 2 (`mistlib.baselines.ChannelwiseMIST`). Everything in it is differentiable. But the number of points
# is fixed by the architecture, and each channel has to learn *which* instance is its own. With nine digits
# at random places, and repeats of the same digit, there is no natural way to decide which digit belongs
# to channel 3.
#
# The figure runs the pretrained channel-wise model: its K points on the image, and the first three channel
# maps with their mean marked. (A diffuse map has its mean somewhere between the digits.)

# %%
channelwise, _, cw_meta = pretrained("reconstruct-mnist-hard-channelwise", device=device)
with torch.no_grad():
    cw = channelwise(image[None].to(device))
maps, points = cw.heatmap[0].cpu(), cw.keypoints[0].cpu()  # (K, H, W) distributions, (K, 3) their means
print("channel-wise:", tuple(maps.shape), "maps ->", tuple(points.shape), "points; trained for",
      cw_meta.get("steps"), "steps on", cw_meta.get("device_name"))  # fmt: skip
fig = show_channelwise(image, maps, points, shown=3)
fig

# %% [markdown]
# The check confirms what the figure means: each map is a probability distribution over the pixels, and
# each point is exactly that distribution's mean position (a soft argmax).

# %%
cols = torch.arange(80.0)
assert torch.allclose(maps.sum((1, 2)), torch.ones(len(maps)), atol=1e-4)
assert torch.allclose(points[:, 0], (maps.sum(1) * cols).sum(-1), atol=1e-3)  # mean column
assert torch.allclose(points[:, 1], (maps.sum(2) * cols).sum(-1), atol=1e-3)  # mean row

# %% [markdown]
# The other use of heatmaps is older: compute **one** map for all instances and keep its K strongest
# peaks. That is how classic local-feature detectors work, and how learned ones such as LF-Net produce
# keypoints. One map does not care how many instances there are, or whether two of them are the same digit.
# The price is the top-K selection, which passes no gradient to the positions (chapter 1). This is the route
# MIST takes. Below, the pretrained MIST's heatmap (a maximum over its scales) and the K windows read from
# it.

# %%
mist, _, _ = pretrained("reconstruct-mnist-hard-mist", device=device)
with torch.no_grad():
    heatmap, keypoints = mist.extract(image[None].to(device))  # (1, S, H, W), (1, K, 3)
heatmap, keypoints = heatmap[0].cpu(), keypoints[0].cpu()
fig = show_heatmap_picks(image, heatmap, keypoints)
fig

# %%
nms = mist.config.nms  # the suppression window of §3 (chapter 4; chapter 9 §9.6 sets 13 x 13)
peak = heatmap.amax(0)  # (H, W) the map that eq. (3) ranks
is_max = (peak == torch.nn.functional.max_pool2d(peak[None], nms, 1, nms // 2)[0]).flatten()  # (H * W,)
taken = (keypoints[:, 1] * 80 + keypoints[:, 0]).long()  # (K,) flat indices of the picks
candidates = peak.flatten().where(is_max, torch.tensor(-1.0))  # only local maxima compete
assert torch.equal(taken, candidates.topk(len(keypoints)).indices)  # exactly the K strongest peaks
assert torch.equal(keypoints, topk_extract(heatmap[None], len(keypoints), mist.scales.cpu(), nms)[0])  # E_K
print("MIST: one map of", tuple(heatmap.shape), "-> K =", len(keypoints), "windows")

# %% [markdown]
# ## 2.3 Sequential inference
#
# A recurrent network can look at one part of the image at a time (§2): DRAW reads and writes through a
# moving attention window, and AIR ("Attend, Infer, Repeat", Eslami et al.) explains a scene one object per
# step. At each step it picks a window, encodes what is inside, updates its hidden state and decides
# whether to stop. No boxes are needed, and the number of objects may vary. But the state has to carry
# everything explained so far, and such networks generalise poorly to more steps than they were trained
# on. Section 7 reports that AIR, asked for nine digits, learns to cover the scene with a few large windows
# instead.
#
# The drawing is schematic. It shows the first steps of an *ideal* sequential model, which visits the
# ground-truth boxes from left to right.

# %%
order = boxes[:, 0].argsort(stable=True)  # left to right
fig = sequential_diagram(image, boxes[order], steps=3)
fig

# %% [markdown]
# ## 2.4 Knowledge transfer
#
# If labelled data exist for a *related* problem, a detector can be trained there and carried over (§2):
# for example, train on images holding one labelled instance each, then apply the detector to crowded
# scenes, or transfer a proposal generator from other classes. This works, but it needs the extra labelled
# data set. MIST's aim is to need none. The schematic shows a labelled MNIST digit as the source, and our
# test image as the target. The dashed boxes are what the transferred detector would have to find there
# without any label.

# %%
digits, digit_labels = mnist_digits("train")  # (N, 28, 28) uint8, (N,)
source = torch.zeros(1, 40, 40)
source[0, 6:34, 6:34] = torch.from_numpy(digits[0]).float() / 255  # one digit on a small canvas
rows, cols_ = torch.nonzero(source[0] > 0.1, as_tuple=True)
source_box = torch.tensor([cols_.min() - 0.5, rows.min() - 0.5, cols_.max() + 0.5, rows.max() + 0.5])
fig = transfer_diagram(source, source_box, int(digit_labels[0]), image, boxes)
fig

# %% [markdown]
# ## 2.5 Weakly supervised detection
#
# Weakly supervised detectors learn from image-level labels: "this image contains a 3 and two 7s", with no
# positions (§2). They usually start from region proposals produced by an existing method or a hand-tuned
# rule, and learn which proposals explain the labels. The schematic uses the crudest possible rule:
# square windows of two sizes slid over the image, scored by their mean brightness. Greedy non-maximum
# suppression then keeps the nine best that do not overlap much. The learned part of a real method replaces
# only the scoring; where the candidate windows can be is fixed in advance, which is the limitation §2
# points out.

# %%
proposals = sliding_proposals(80, sides=(20, 28), stride=12)  # (N, 4) xyxy
scores = ink_scores(image, proposals)  # (N,) the hand-made score
kept = select_proposals(proposals, scores, keep=9, iou=0.3)  # (M,) indices, best first
fig = weakly_supervised_diagram(image, proposals, kept, labels.tolist())
fig

# %%
overlap = box_iou(proposals[kept], proposals[kept]) - torch.eye(len(kept))  # (M, M), diagonal removed
assert float(overlap.max()) <= 0.3  # no two kept windows overlap much
found = box_iou(boxes, proposals[kept]).amax(1) >= 0.5  # (L,) digits matched by a kept window
print(f"{len(proposals)} proposals, {len(kept)} kept; {int(found.sum())} of {len(boxes)} digits have a kept "
      "window with IoU >= 0.5")  # fmt: skip

# %% [markdown]
# ## Summary
#
# - Grids assume at most one instance per cell, and grid detectors need boxes to learn.
# - One heatmap channel per instance is differentiable, but it fixes the number of instances, and each
#   channel has to claim one of several look-alike digits.
# - Sequential models need no boxes, but a long sequence is hard to learn, and nine digits is already long.
# - Knowledge transfer needs a second, labelled data set; weakly supervised detectors need proposals made
#   by someone else's rule.
# - MIST keeps a single heatmap read by top-K, which handles any number of look-alike instances. The cost
#   is the non-differentiable selection, which §6 removes by lifting.

# %% [markdown]
# ## Exercises
#
# 1. Use `cell_counts` to count, over the 4 test images of `test`, how many digits a one-per-cell model with
#    the $3 \times 3$ grid would miss. Would a finer $5 \times 5$ grid (`grid_keypoints(25, 80)`) help?
#
# <details><summary>Solution</summary>
#
# ```python
# for k in (9, 25):
#     missed = sum(int((cell_counts(grid_keypoints(k, 80), test[i]["centers"]) - 1).clamp(min=0).sum())
#                  for i in range(len(test)))
#     print(k, "cells:", missed, "digits missed")
# ```
#
# A finer grid misses fewer digits, because crowded cells become rarer. But the cells (16 px) are now
# smaller than a digit (16–24 px), so a digit spreads over several cells, and the grid also has 25 windows
# for 9 digits. There is no grid size that suits every image.
#
# </details>
#
# 2. In the channel-wise model, swap two channels of the last layer (`channelwise.heatmap_net.head`). What
#    happens to the K points and to the reconstruction?
#
# <details><summary>Solution</summary>
#
# The points swap places in the list, and the reconstruction does not change: each point is cut out and
# decoded by the same shared auto-encoder, and the decoded patches are combined by a sum (or, in our MNIST
# models, a maximum), which ignores their order. Nothing ties a channel to a
# particular digit other than what training happened to settle on. That is why channel-wise methods
# struggle to decide which of several look-alike instances each channel should follow.
#
# </details>
#
# 3. The weakly supervised schematic scores windows by mean brightness. Which windows does that score
#    favour, and how does that show in the figure?
#
# <details><summary>Solution</summary>
#
# Mean brightness favours small windows on thick, overlapping strokes, so the kept windows tend to gather
# where digits overlap. Thin or isolated digits lose out, and a window that covers a whole digit plus its
# dark margin scores lower than one that covers half a digit. A learned scorer does better, but it can only
# choose among the windows the rule proposed.
#
# </details>
