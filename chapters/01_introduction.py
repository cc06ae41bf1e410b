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
# # 1. Introduction
#
# Many vision problems are about *several things at once*: the digits on a cheque, the people in a crowd, the
# corners and blobs that a feature detector returns. Before deep learning, the usual way to find them was to
# compute a score for every pixel and keep the K best. MIST (Multiple Instance Spatial Transformer networks,
# Angles et al.) keeps that recipe inside a network that is trained end to end, with almost no supervision:
# for image reconstruction, the number K of instances is the only thing the network is told. This chapter
# covers §1 of the paper: the problem, the obstacle that makes it hard, and a first look at a trained model.
#
# **What you will learn**
#
# - what the multi-instance problem is, on the MNIST-hard images used throughout this book;
# - why selecting the top K responses of a heatmap, the classic recipe, gives back-propagation nothing to
#   work with — shown on a tiny example where the gradient of the selected positions is exactly zero;
# - the shape of a MIST (eq. 1): heatmap, top-K extractor, sampler, task network;
# - what the MIST model shipped with this book does on a test image, and how to retrain it properly;
# - how the rest of the book follows the paper section by section.

# %% [markdown]
# ## Setup
#
# Everything runs on the CPU, with fixed seeds and fixed test images, so the printed numbers repeat from run
# to run. To use a GPU, set `device = "cuda"` in the next cell (the figures may then differ very slightly).

# %%
# %matplotlib inline
import torch

from mistlib.data import MNISTHard, collate
from mistlib.experiments import pretrained, recipe
from mistlib.extract import topk_extract
from mistlib.viz import show_samples
from mistlib.viz.pipeline import pipeline_diagram, show_first_look, show_topk_gradient

torch.manual_seed(0)
device = "cpu"  # "cuda" runs the model on a GPU

# %% [markdown]
# ## 1.1 Many instances, and no idea where they are
#
# The running example of the paper (§7.1) and of this book is **MNIST hard**: $80 \times 80$ images holding
# nine handwritten digits each, at random positions, at random sizes, and with repeats allowed, so that an
# image can hold three 7s. The data set knows where each digit is (the orange boxes below), but MIST never
# sees those boxes during training; we keep them only to check what it found. For the reconstruction task,
# the one piece of supervision is K = 9, the number of patches to extract. The paper calls this setting
# *quasi-unsupervised* (§3).

# %%
test = MNISTHard(split="test", size=16, seed=1)  # fresh test images, generated from a fixed seed
batch = collate([test[i] for i in range(8)])
fig = show_samples(batch, ncols=8, size=1.6)
fig

# %% [markdown]
# Three things make the problem hard, and they are visible above: the digits do not sit on a grid, so a
# method cannot assign one instance per cell; they come in different sizes, so a patch needs a scale as
# well as a position; and the same class appears more than once, so a method cannot dedicate one detector
# per class. The check below counts each of these on the eight test images.

# %%
counts = batch["num_instances"]  # (B,)
labels = [batch["labels"][b, : int(n)].tolist() for b, n in enumerate(counts)]
widths = batch["boxes"][..., 2] - batch["boxes"][..., 0]  # (B, L) box sides in pixels
repeats = sum(len(set(row)) < len(row) for row in labels)
print("instances per image:", counts.tolist())
print(f"box sides from {float(widths.min()):.0f} to {float(widths.max()):.0f} px")
print(f"{repeats} of {len(labels)} images hold the same digit more than once")
assert bool((counts == 9).all())  # K = 9 matches the data
assert float(widths.max()) > float(widths.min())  # sizes differ
assert repeats > 0  # repeated classes occur

# %% [markdown]
# ## 1.2 Why top-K stops back-propagation
#
# The classic recipe (§1) scores every location, then keeps the K highest scores and their *positions*. A
# network that does the scoring would have to learn from what happens after the selection: if a patch cut
# out at a selected position reconstructs the image badly, the network should move that peak. But the
# positions come out of a sort. Nudge the scores a little and the K winners stay the same pixels; nudge them
# a lot and a winner jumps to a different pixel. A function that is constant almost everywhere and jumps
# elsewhere has a derivative of zero wherever it has one at all.
#
# We check this on a toy heatmap with two scales on a $16 \times 16$ grid: noise below 0.5 and four clear
# peaks, scores 0.95, 0.9, 0.85 and 0.8. We ask for K = 3 with the library's top-K extractor `topk_extract`
# (eqs. 2–4, chapter 4). It returns, for each of the K picks, a position $(x, y)$ and a scale $s$. Plain
# PyTorch tells the same story: the indices returned by `torch.topk` are integers, with no autograd history.

# %%
K = 3
scales = torch.tensor([16.0, 25.0])  # (S,) patch sides in pixels
heatmap = 0.5 * torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))  # (B, S, H, W)
for (x, y), value in zip([(3, 4), (11, 2), (6, 12), (13, 9)], [0.95, 0.9, 0.85, 0.8], strict=True):
    heatmap[0, :, y, x] = torch.tensor([value, value / 2])  # four clear peaks, stronger at the small scale
heatmap.requires_grad_(True)
keypoints = topk_extract(heatmap, K, scales)  # (B, K, 3) as (x, y, s)
print("picks (x, y, s):", [[round(v, 2) for v in row] for row in keypoints[0].tolist()])

index = heatmap.amax(dim=1).flatten(1).topk(K).indices  # (B, K) flat pixel indices: plain torch.topk
print("torch.topk indices:", index.tolist(), index.dtype, "requires_grad =", index.requires_grad)
assert not index.requires_grad and not index.dtype.is_floating_point
assert torch.equal(keypoints[0, :, 0].long(), index[0] % 16)  # columns: the library agrees with torch.topk
assert torch.equal(keypoints[0, :, 1].long(), index[0] // 16)  # rows

# %% [markdown]
# Now back-propagate. The gradient of the picked positions with respect to the heatmap is exactly zero at
# every pixel. The scales do receive a gradient, because eq. (4) computes them as a weighted mean of heatmap
# values, but only from the K selected pixels: the other $16 \times 16 - K$ pixels receive nothing, however
# wrong their scores are.

# %%
(grad_xy,) = torch.autograd.grad(keypoints[..., :2].sum(), heatmap, retain_graph=True)  # (B, S, H, W)
(grad_s,) = torch.autograd.grad(keypoints[..., 2].sum(), heatmap)  # (B, S, H, W)
touched = grad_s[0].abs().sum(0) > 0  # (H, W): pixels that receive any gradient through s
picked = torch.zeros(16, 16, dtype=torch.bool)
picked[index[0] // 16, index[0] % 16] = True
print("largest |d(x, y)/dh|:", float(grad_xy.abs().max()))
print("pixels with a gradient through s:", int(touched.sum()), "of", touched.numel())
assert float(grad_xy.abs().max()) == 0.0
assert torch.equal(touched, picked)

# %% [markdown]
# Autograd could be hiding something, so here is the same fact measured without it. Random changes of the
# heatmap smaller than a quarter of the smallest gap between the top K + 1 scores cannot reorder them, so
# they leave the picked positions unchanged: every finite difference is zero. And raising the score of
# one other pixel step by step moves the first pick not gradually but all at once, at the moment that pixel
# overtakes the old winner: position as a function of score is a staircase.

# %%
with torch.no_grad():
    base = heatmap.detach()
    ranked = base.amax(dim=1).flatten().sort(descending=True).values[: K + 1]  # the top K + 1 scores
    eps = float((ranked[:-1] - ranked[1:]).min()) / 4
    noise = torch.Generator().manual_seed(1)
    for _ in range(200):
        nudged = base + eps * (2 * torch.rand(base.shape, generator=noise) - 1)  # |change| <= eps
        assert torch.equal(topk_extract(nudged, K, scales)[..., :2], keypoints.detach()[..., :2])
    winner = float(base.amax(dim=1).max())
    values = torch.linspace(0.0, 1.2, 121) + 0.005  # scores given to one pixel far from the first pick
    first_x = []
    for value in values:
        moved = base.clone()
        moved[0, :, 15, 15] = value  # pixel (x, y) = (15, 15)
        first_x.append(topk_extract(moved, K, scales)[0, 0, 0])
    first_x = torch.stack(first_x)  # (121,) x of the first pick
print(f"200 random changes of size up to {eps:.2e}: the picked positions never moved")
print("x of the first pick takes the values", sorted(set(first_x.tolist())))
jump = float(values[first_x == 15].min())
print(f"it jumps once, where the pixel's score ({jump:.3f}) passes the old winner's ({winner:.2f})")
assert len(set(first_x.tolist())) == 2 and jump >= winner

# %%
fig = show_topk_gradient(base[0].amax(0), keypoints[0].detach(), grad_xy[0].abs().sum(0),
                         grad_s[0].abs().sum(0), sweep=(values, first_x))  # fmt: skip
fig

# %% [markdown]
# This is the obstacle of the whole paper. Back-propagating through a top-K selection works like
# back-propagating through max-pooling: the gradient reaches only what was selected. §6 argues that this is
# not a detail. To learn *where* instances are, the heatmap network needs negative evidence as much as
# positive — "this pixel you did not pick should have scored higher" — and a selection cannot say that.
#
# The usual ways round it (§1, and chapter 2) avoid the selection altogether: a fixed grid of candidate
# windows, one heatmap channel per instance, or a recurrent network that attends to one instance at a time.
# Each works in its own domain, but each assumes something MNIST hard breaks: instances spread out over the
# cells, a fixed set of distinct instances, or a short sequence.

# %% [markdown]
# ## 1.3 MIST in one picture
#
# A MIST keeps the selection and changes the training. The network reads the image as a *scale-space
# heatmap*: the heatmap network $\mathcal{H}_\eta$ scores every position at a few patch sizes. The top-K
# extractor $\mathcal{E}_K$ turns the K strongest peaks into patch parameters
# $\mathbf{x}_k = (x_k, y_k, s_k)$. The sampler $\mathcal{S}$ cuts out those K patches, and one task network
# $\mathcal{T}_\tau$, shared by all patches, processes each of them — for instance an auto-encoder whose
# decoded patches, put back in place, should rebuild the image. Eq. (1) of the paper writes the training
# goal as one composition,
#
# $$\min_{\tau, \eta}\; \mathcal{L}_\text{task}\Big(\mathcal{T}_\tau\big(
#   \mathcal{S}(\mathcal{E}_K(\mathcal{H}_\eta(I)))\big)\Big),$$
#
# and the diagram shows where back-propagation stops: at $\mathcal{E}_K$, for the reason of §1.2.

# %%
fig = pipeline_diagram()
fig

# %% [markdown]
# The way round it is *lifting* (§6, chapter 6). Treat the K patch parameters as free variables of their
# own. The sampler is differentiable in $(x, y, s)$, so the task loss can move the patches directly, to
# wherever the task network does its job best. Then turn the improved patches back into a target heatmap,
# and train $\mathcal{H}_\eta$ to produce that heatmap, a plain regression problem. Repeat. The heatmap
# network never needs a gradient through the selection; it learns from targets that the selection, run on
# them, would reproduce.

# %% [markdown]
# ## 1.4 A first look at a trained MIST
#
# The book ships a MIST trained to reconstruct MNIST-hard images. Like every model in the book it was
# trained on a 2-core CPU by the project's own command, which its metadata records (printed below): the
# `cpu` recipe, with compact networks and 2,000 steps of 32 images. The `gpu` recipe trains the paper's
# networks on the paper's schedule, for readers with a GPU:
#
# ```
# mist train --task reconstruct --data mnist-hard --method mist --budget gpu
# ```
#
# A new checkpoint lands in `runs/`; pointing the environment variable `MIST_CHECKPOINTS` at a folder of
# checkpoints makes the chapters load those instead. Chapter 7 measures how far each shipped model gets
# against the paper's tables.

# %%
model, experiment, meta = pretrained("reconstruct-mnist-hard-mist", device=device)
print("trained on:", meta.get("device_name"), "for", meta.get("steps"), "steps")
print("training settings:", experiment.train)
cpu_recipe = recipe("reconstruct", "mnist-hard", "mist", budget="cpu")
settings = {key: value for key, value in experiment.train.items() if key != "device"}  # not where it ran
same = experiment.model == cpu_recipe.model and settings == cpu_recipe.train
print("trained with the cpu recipe:", same)
assert same  # the shipped model is what `recipe(..., budget="cpu")` trains today
print("the full (GPU) recipe trains for", recipe("reconstruct", "mnist-hard", "mist").train["steps"], "steps")

# %% [markdown]
# We run it on the first four test images above. For each image it returns the heatmap, K = 9 windows, the
# nine patches and their decoded versions, and the reconstruction: the decoded patches, each put back at its
# window and combined (eq. 6 adds them up; our MNIST models take their pixelwise maximum, see chapter 5).
# The figure shows one image, the windows MIST chose, and what it rebuilt from them.

# %%
images = test.images[:4].to(device)  # (B, C, H, W) = (4, 1, 80, 80)
with torch.no_grad():
    out = model(images)
print("keypoints:", tuple(out.keypoints.shape), " reconstruction:", tuple(out.reconstruction.shape))
fig = show_first_look(images[0].cpu(), out.keypoints[0].cpu(), out.reconstruction[0].cpu().clamp(0, 1),
                      title="MIST on a test image")  # fmt: skip
fig

# %% [markdown]
# How good is it? The root-mean-square error of each reconstruction is printed beside that of the
# laziest possible "reconstruction", an all-black image. The checks hold for any checkpoint: K windows per
# image, centres inside the image, and sizes inside the model's scale space (eq. 4 is a weighted mean of
# the scales).

# %%
rmse = (out.reconstruction.clamp(0, 1) - images).square().flatten(1).mean(1).sqrt()  # (B,)
blank = images.square().flatten(1).mean(1).sqrt()  # (B,) error of an all-black image
for b in range(len(images)):
    print(f"image {b}: RMSE {float(rmse[b]):.3f}   (all-black image: {float(blank[b]):.3f})")
x, y, s = out.keypoints.unbind(-1)  # (B, K) each
assert out.keypoints.shape == (4, model.config.k, 3)
assert bool(((x >= 0) & (x < 80) & (y >= 0) & (y < 80)).all())
low, high = min(model.config.scales), max(model.config.scales)
assert bool(((s >= low - 1e-3) & (s <= high + 1e-3)).all())

# %% [markdown]
# ## 1.5 How this book is organised
#
# Each chapter follows one section of the paper, loads the pretrained models, and checks what it claims in
# code.
#
# | Chapter | Paper | What it covers |
# |---|---|---|
# | 2. Related work | §2 | how earlier methods localise instances: grids, heatmaps, sequences, ... |
# | 3. The MIST framework | §3, eq. (1) | the pipeline on one image, every tensor and its shape |
# | 4. Patch extraction | §4, eqs. (2)–(5) | multiscale heatmap, local softmax, top-K, sampler |
# | 5. Task networks | §5, eqs. (6)–(7) | patch auto-encoder, $\mathcal{S}^{-1}$, multi-instance loss |
# | 6. Training by lifting | §6, Alg. 1 | the three training stages, replayed from a training log |
# | 7. Results | §7, Tables 1–2 | the paper's comparisons, rebuilt from the checkpoints |
# | 8. Implementation details | §8 | architectures, hyper-parameters, retraining everything |
# | 9. Making lifting learn | appendix | the learning curves behind this book's training recipe |

# %% [markdown]
# ## Summary
#
# - The multi-instance problem asks a network to find and process an unknown set of objects: several per
#   image, anywhere, at different sizes, possibly of the same class. In MNIST hard only K is given.
# - Keeping the top K peaks of a heatmap is the classic answer, but the selected positions are a
#   piecewise-constant function of the scores: their gradient is zero wherever it exists. Only the
#   selected pixels receive any gradient at all, through the scale of eq. (4).
# - A MIST chains a heatmap network, the top-K extractor, a sampler and a shared task network (eq. 1). It
#   is trained by lifting: optimise the patch parameters directly, then regress the heatmap onto them.
# - The models shipped with this book were trained on two CPU cores by `mist train ... --budget cpu`;
#   `--budget gpu` trains the paper's networks on the paper's schedule.

# %% [markdown]
# ## Exercises
#
# 1. In the toy example of §1.2, set `K = 10`. How many pixels now receive a gradient through $s$? And
#    through $(x, y)$?
#
# <details><summary>Solution</summary>
#
# Ten pixels get a gradient through $s$, the ten picks (one per pick, shared by both scales of that pixel),
# and still none through $(x, y)$: the positions are integers read off the sort. Change `K` in the cell that
# defines it, re-run the next two cells, and the asserts still hold.
#
# </details>
#
# 2. Replace the top-K selection by a *soft argmax*: a softmax over all pixels of $\max_s \mathbf{h}_s$,
#    then the expected column $x = \sum_p w_p\, \mathrm{col}(p)$. Does every pixel now get a gradient? What
#    do you lose?
#
# <details><summary>Solution</summary>
#
# ```python
# peak = heatmap.amax(dim=1).flatten(1)                 # (B, H * W)
# weights = torch.softmax(peak / 0.05, dim=-1)          # temperature 0.05
# x = (weights * (torch.arange(256) % 16)).sum()
# (grad,) = torch.autograd.grad(x, heatmap)
# int((grad.abs().sum(1) > 0).sum())                    # 256: every pixel
# ```
#
# Every pixel now receives a gradient, but a soft argmax returns *one* point: the average position of
# everything that scores high. With several digits in the image it lands between them. Channel-wise
# methods (chapter 2) work around this with one heatmap channel per instance, which fixes the number of
# instances and does not handle two instances of the same kind well.
#
# </details>
#
# 3. The extractor takes K as an argument at test time. Run `model.extract(images, k=3)` on the pretrained
#    model. Are the three windows the first three of the nine?
#
# <details><summary>Solution</summary>
#
# Yes. `topk_extract` returns the picks sorted by decreasing score, so the top 3 are the first three of
# the top 9:
#
# ```python
# with torch.no_grad():
#     _, three = model.extract(images, k=3)
# assert torch.equal(three, out.keypoints[:, :3])
# ```
#
# </details>
