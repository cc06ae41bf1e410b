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
# # 3. The MIST framework
#
# Section 3 of the paper describes a MIST in one equation. Two trainable networks are joined by two
# operators without weights:
#
# $$\min_{\tau, \eta}\; \mathcal{L}_\text{task}\Big(\mathcal{T}_\tau\big(
#   \mathcal{S}(\mathcal{E}_K(\mathcal{H}_\eta(I)))\big)\Big). \tag{1}$$
#
# This chapter runs eq. (1) from left to right on one MNIST-hard test image, with the pretrained
# reconstruction model. It stops at every arrow to look at the intermediate result, print its shape and
# check it. Chapters 4 and 5 then open each box.
#
# **What you will learn**
#
# - the four stages of a MIST — heatmap network $\mathcal{H}_\eta$, top-K extractor $\mathcal{E}_K$, sampler
#   $\mathcal{S}$, task network $\mathcal{T}_\tau$ — and the tensor each one produces;
# - which stages have weights and which are fixed operations;
# - that running the stages one by one gives exactly what `MIST.forward` gives;
# - where back-propagation through eq. (1) stops, and why the patch parameters are nonetheless a good
#   handle for training (the idea behind lifting, §6).

# %% [markdown]
# ## Setup and notation
#
# The shapes below use one set of letters, in the book and in `mistlib` alike:
#
# | Letter | Meaning | MNIST hard |
# |---|---|---|
# | B | images in a batch | 1 here |
# | C, H, W | channels, height, width of an image | 1, 80, 80 |
# | S | scales of the heatmap (patch sides in pixels) | printed below |
# | K | patches extracted per image | 9 |
# | P | side of a resampled patch | 32 |
#
# CPU and a fixed test image, so every number repeats from run to run (set `device = "cuda"` to use a GPU).
# The checkpoint is the book's MNIST-hard reconstruction model (chapter 1 prints how it was trained).

# %%
# %matplotlib inline
import torch

from mistlib.data import MNISTHard
from mistlib.experiments import pretrained
from mistlib.extract import topk_extract
from mistlib.losses import reconstruct
from mistlib.sampler import sample_patches
from mistlib.viz.pipeline import pipeline_diagram, show_patches, show_pipeline

torch.manual_seed(0)
device = "cpu"  # "cuda" runs the model on a GPU

model, experiment, meta = pretrained("reconstruct-mnist-hard-mist", device=device)
config = model.config
print(f"checkpoint: {experiment.name}, {meta.get('steps')} steps on {meta.get('device_name')}")
print("K =", config.k, " scales (px) =", config.scales, " P =", config.patch_size)

# %% [markdown]
# ## 3.1 The two modules and the glue between them
#
# A MIST has two trainable parts (§3). The **heatmap network** $\mathcal{H}_\eta$, with weights $\eta$,
# scores every image position at each of S patch sizes (§4). The **task network** $\mathcal{T}_\tau$, with
# weights $\tau$, processes one patch at a time, with the same weights for every patch (§5). Between them
# sit two fixed operations. The **top-K extractor** $\mathcal{E}_K$ reads K patch parameters
# $\mathbf{x}_k = (x_k, y_k, s_k)$ off the heatmap: non-maximum suppression, done by the heatmap's local
# softmax, then a top-K selection. The **sampler** $\mathcal{S}$ cuts the K patches out of the image by
# bilinear interpolation. The diagram marks the trainable boxes in blue.

# %%
fig = pipeline_diagram(gradient=False)
fig

# %% [markdown]
# Only the two networks own parameters; $\mathcal{E}_K$ and $\mathcal{S}$ are plain functions in
# `mistlib.extract` and `mistlib.sampler`. The counts below are what training has to fit.

# %%
n_heatmap = sum(p.numel() for p in model.heatmap_net.parameters())
n_task = sum(p.numel() for p in model.task_net.parameters())
print(f"H_eta: {n_heatmap:,} weights   T_tau: {n_task:,} weights   E_K, S: none")
assert n_heatmap + n_task == sum(p.numel() for p in model.parameters())  # nothing else has weights

# %% [markdown]
# ## 3.2 Eq. (1), one stage at a time
#
# **The image $I$.** One test image from a fixed seed, as a batch of one: `(B, C, H, W)`.

# %%
test = MNISTHard(split="test", size=16, seed=1)
images = test.images[:1].to(device)  # (B, C, H, W)
low, high = float(images.min()), float(images.max())
print("I:", tuple(images.shape), images.dtype, f"values in [{low:.0f}, {high:.0f}]")
assert images.shape == (1, 1, 80, 80)

# %% [markdown]
# **The heatmap $\mathbf{h} = \mathcal{H}_\eta(I)$.** One map per scale, at full image resolution:
# `(B, S, H, W)`. After the local spatial softmax (§4) every value lies in $[0, 1]$.

# %%
with torch.no_grad():
    heatmap = model.heatmap_net(images)  # (B, S, H, W)
print("h:", tuple(heatmap.shape), f"values in [{float(heatmap.min()):.3f}, {float(heatmap.max()):.3f}]")
assert heatmap.shape == (1, len(config.scales), 80, 80)
assert float(heatmap.min()) >= 0 and float(heatmap.max()) <= 1

# %% [markdown]
# **The patch parameters $\{\mathbf{x}_k\} = \mathcal{E}_K(\mathbf{h})$.** K rows of $(x, y, s)$ in pixels:
# `(B, K, 3)`. The positions are whole pixels (the top-K picks), and each scale is a weighted mean of the
# S scales (eq. 4), so it lies between the smallest and the largest.

# %%
keypoints = topk_extract(heatmap, config.k, model.scales, config.nms)  # (B, K, 3) as (x, y, s)
print("x_k:", tuple(keypoints.shape))
for k, (x, y, s) in enumerate(keypoints[0].tolist(), start=1):
    print(f"  patch {k}: centre ({x:.0f}, {y:.0f}), side {s:.1f} px")
assert keypoints.shape == (1, config.k, 3)
assert torch.equal(keypoints[..., :2], keypoints[..., :2].round())  # integer positions
assert min(config.scales) - 1e-3 <= float(keypoints[..., 2].min())
assert float(keypoints[..., 2].max()) <= max(config.scales) + 1e-3

# %% [markdown]
# **The patches $\{\mathbf{P}_k\} = \mathcal{S}(I, \{\mathbf{x}_k\})$**, eq. (5). Each window of side $s_k$ is
# resampled to $P \times P$ pixels, whatever its size: `(B, K, C, P, P)`. The task network therefore always
# sees patches of one size.

# %%
patches = sample_patches(images, keypoints, size=config.patch_size)  # (B, K, C, P, P)
print("P_k:", tuple(patches.shape))
assert patches.shape == (1, config.k, 1, config.patch_size, config.patch_size)
fig = show_patches(patches[0], keypoints[0], title="the K patches, with their windows (x, y) and sides s")
fig

# %% [markdown]
# **The task output $\mathcal{T}_\tau(\mathbf{P}_k)$.** For reconstruction the task network is an
# auto-encoder, run on every patch with the same weights; it returns one decoded patch per input patch:
# `(B, K, C, P, P)`.

# %%
with torch.no_grad():
    decoded = model.task_net(patches)  # (B, K, C, P, P)
print("T(P_k):", tuple(decoded.shape))
assert decoded.shape == patches.shape

# %% [markdown]
# **The reconstruction and the loss.** The reconstruction task turns the decoded patches back into an image:
# each is put back at its window by the inverse sampler $\mathcal{S}^{-1}$ and the K results are added up
# (eq. 6, chapter 5; our MNIST models take their pixelwise maximum instead, for a reason chapter 5 gives).
# That gives `(B, C, H, W)` again, and $\mathcal{L}_\text{task}$ compares it with the input. (`mistlib`
# averages the squared error over pixels instead of summing it: the same minimiser, on a scale that does not
# depend on the image size.)

# %%
b = config.background  # 0 for MNIST hard: patches are placed on a black canvas
reconstruction = reconstruct(decoded - b, keypoints, (80, 80), config.composite) + b  # (B, C, H, W)
loss = (images - reconstruction).square().mean()
print("reconstruction:", tuple(reconstruction.shape), f"  L_task = {float(loss):.4f}")
assert reconstruction.shape == images.shape

# %% [markdown]
# Run one after the other, the stages are exactly `MIST.forward`, the library's implementation of eq. (1):

# %%
with torch.no_grad():
    out = model(images)
assert torch.equal(out.heatmap, heatmap) and torch.equal(out.keypoints, keypoints)
assert torch.allclose(out.patches, patches) and torch.allclose(out.task_output, decoded)
assert torch.allclose(out.reconstruction, reconstruction, atol=1e-6)
assert torch.allclose(model.task_loss(images, out), loss)
print("step by step == MIST.forward: yes")

# %% [markdown]
# ## 3.3 The whole pipeline in one figure
#
# Top row: the image, the S heatmap channels (square-root colour scale, so that small peaks show), the K
# windows picked by $\mathcal{E}_K$, and the reconstruction. Second row: the K patches cut out by
# $\mathcal{S}$. Third row: what the auto-encoder made of each. With a well-trained model each window
# would hold one digit, and each decoded patch would be a clean copy of it; chapter 7 measures how often
# the shipped model gets there.

# %%
fig = show_pipeline(images[0].cpu(), heatmap[0].cpu(), keypoints[0].cpu(), patches[0].cpu(), decoded[0].cpu(),
                    reconstruction[0].cpu().clamp(0, 1), scales=config.scales)  # fmt: skip
fig

# %% [markdown]
# ## 3.4 Where the gradient goes
#
# Eq. (1) cannot be trained by back-propagation alone, because $\mathcal{E}_K$ is a selection (§3). The
# cell below back-propagates the task loss once through the whole pipeline and looks at two gradients.
#
# - With respect to the **heatmap**: non-zero at no more than the K selected pixels. They are reached only
#   through the scale weights of eq. (4); every other pixel of $\mathbf{h}$ receives nothing.
# - With respect to the **patch parameters**: the sampler is bilinear, so the loss has a real gradient with
#   respect to each $(x_k, y_k, s_k)$. It says in which direction moving, growing or shrinking each window
#   would lower the loss.
#
# The second gradient exists and the first is almost empty. Lifting (§6, chapter 6) is built on that
# asymmetry: optimise the patch parameters directly with their gradient, then teach $\mathcal{H}_\eta$ to
# put its peaks where the optimised patches ended up.

# %%
h = model.heatmap_net(images).detach().requires_grad_(True)  # (B, S, H, W), a leaf
x = topk_extract(h, config.k, model.scales, config.nms)  # (B, K, 3): positions without history, scales with
x.retain_grad()
out = model.run_task(images, x)  # S, T and S^-1 at these patch parameters
model.task_loss(images, out).backward()
reached = h.grad[0].abs().sum(0) > 0  # (H, W) pixels of the heatmap that received a gradient
print("heatmap pixels with a gradient:", int(reached.sum()), "of", reached.numel(), f"(K = {config.k})")
print("dL/d(x, y, s) of the first three patches, in units of 1e-4 per pixel:")
for row in x.grad[0, :3].tolist():
    print("  ", [f"{v * 1e4:+.0f}" for v in row])
assert int(reached.sum()) <= config.k
picked = torch.zeros_like(reached)
picked[x[0, :, 1].long(), x[0, :, 0].long()] = True  # (H, W) the K selected pixels
assert not bool((reached & ~picked).any())  # a gradient only at selected pixels
assert float(x.grad[..., :2].abs().sum()) > 0  # the positions do have a gradient, from the sampler
model.zero_grad(set_to_none=True)

# %% [markdown]
# ## 3.5 The example task, and what K means
#
# Figure 2 of the paper uses reconstruction as its running example. The image must be rebuilt as a sum of
# K small, localised pieces, all produced by the same auto-encoder. Nothing tells the network what a piece
# should look like, where it should go, or how to encode it. It has to discover a shared vocabulary of
# shapes (here, digits), where to place each one, and the code for each placement, all at once. The only
# number it is given is K. That is what §3 calls *quasi-unsupervised*. K is also a test-time argument of
# $\mathcal{E}_K$ (`model.extract(images, k=...)`): the picks come sorted by score, so asking for fewer
# patches keeps the strongest ones.

# %%
with torch.no_grad():
    _, three = model.extract(images, k=3)  # (B, 3, 3)
assert torch.equal(three[..., :2], keypoints[:, :3, :2])  # the same three centres
torch.testing.assert_close(three[..., 2], keypoints[:, :3, 2], rtol=1e-5, atol=1e-4)  # scales, to 1e-4 px
print("K = 3 keeps the first three picks:", [[round(v, 1) for v in row] for row in three[0].tolist()])

# %% [markdown]
# ## Summary
#
# - Eq. (1) composes four stages: $\mathcal{H}_\eta$ `(B, C, H, W) -> (B, S, H, W)`, $\mathcal{E}_K$
#   `-> (B, K, 3)`, $\mathcal{S}$ `-> (B, K, C, P, P)`, and $\mathcal{T}_\tau$, whose output depends on the
#   task (decoded patches placed back and combined into `(B, C, H, W)` for reconstruction).
# - Only $\mathcal{H}_\eta$ and $\mathcal{T}_\tau$ have weights; $\mathcal{E}_K$ and $\mathcal{S}$ are fixed
#   operations, and running the stages by hand reproduces `MIST.forward` exactly.
# - Back-propagating the task loss reaches at most K pixels of the heatmap, while the patch parameters get a
#   full gradient from the bilinear sampler. Lifting (§6) uses the second to make up for the first.

# %% [markdown]
# ## Exercises
#
# 1. Feed the pipeline a batch of the first four test images (`test.images[:4]`). Which shapes change, and
#    which asserts of §3.2 would you have to edit?
#
# <details><summary>Solution</summary>
#
# Only the leading B changes, from 1 to 4: `(4, 1, 80, 80)`, `(4, S, 80, 80)`, `(4, K, 3)`,
# `(4, K, 1, P, P)`, and `(4, 1, 80, 80)` for the reconstruction. The asserts that spell out
# `(1, ...)` have to use `len(images)` instead; every other check holds per image.
#
# </details>
#
# 2. Replace the K extracted windows by K identical windows in the image centre,
#    `torch.tensor([[[40.0, 40.0, 20.0]] * 9])`, and run `model.run_task`. What happens to the
#    reconstruction and to the loss?
#
# <details><summary>Solution</summary>
#
# ```python
# centre = torch.tensor([[[40.0, 40.0, 20.0]] * 9])
# with torch.no_grad():
#     same = model.run_task(images, centre)
# print(float(model.task_loss(images, same)), float(loss))
# ```
#
# All nine patches are the same crop, so the auto-encoder decodes the same patch nine times. Our model takes
# the pixelwise maximum of the placed patches, so the nine copies look like one (eq. (6)'s sum would stack
# them, nine times too bright), and the rest of the image stays black. Compare the two printed losses: the
# centred windows do worse than the extracted ones, because *where* the patches are matters as much as how
# well they are decoded. That is why the heatmap has to be trained.
#
# </details>
#
# 3. In §3.4, how many heatmap values (not pixels) received a gradient, and why that number?
#
# <details><summary>Solution</summary>
#
# `int((h.grad != 0).sum())` is at most $S \times K$. Each pick's scale (eq. 4) is a weighted mean of the S
# heatmap values at its pixel, so each of the K picked pixels passes a gradient to its S values, and no
# other value of $\mathbf{h}$ takes part in the loss.
#
# </details>
