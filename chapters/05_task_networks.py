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
# # 5. Task networks
#
# Chapter 4 turned an image into K patches. Section 5 of the paper decides what those patches are *for*. Each
# patch goes through a task network $\mathcal{T}_\tau$, the same weights for all K, and the outputs feed a
# task loss. The paper builds two tasks on the same heatmap network and extractor, changing only
# $\mathcal{T}_\tau$ and the loss: rebuilding the image from its patches (§5.1) and naming the digits in an
# image from a bag of labels (§5.2). This chapter runs both pretrained models, `reconstruct-mnist-hard-mist`
# and `classify-mnist-hard-mist`, on a test image and takes their losses apart.
#
# **What you will learn**
#
# - how the shared patch auto-encoder of §8 squeezes each $32 \times 32$ patch through a 128-number code, and
#   why it has no skip connections;
# - how the inverse sampler $\mathcal{S}^{-1}$ puts a decoded patch back into the image frame, and how
#   eq. (6) rebuilds the image as a sum of K placed patches, one step at a time (and why our MNIST models
#   take their maximum instead);
# - how the multi-instance loss of eq. (7) trains a patch classifier from image-level labels only, with a
#   worked example computed by hand;
# - what the squared-histogram variant of that loss changes.

# %% [markdown]
# ## Setup
#
# CPU, fixed seed, fixed test images, so every printed number repeats run after run; `device="cuda"` below
# runs this chapter on a GPU. The two models are the book's MNIST-hard reconstruction and classification
# models; chapter 7 measures them against the paper's tables.

# %%
# %matplotlib inline
import math

import torch
from IPython.display import display

from mistlib.data import MNISTHard
from mistlib.experiments import pretrained
from mistlib.losses import histogram_loss_sq, multi_instance_loss, reconstruct, reconstruction_loss
from mistlib.sampler import place_patches, sample_patches
from mistlib.viz.tasks import (
    label_histogram,
    reconstruction_widget,
    show_instance_loss,
    show_partial_reconstruction,
    show_reconstruction_steps,
)

torch.manual_seed(0)
device = "cpu"  # "cuda" runs the networks on a GPU

autoencoder, ae_experiment, _ = pretrained("reconstruct-mnist-hard-mist", device=device)
classifier, cl_experiment, _ = pretrained("classify-mnist-hard-mist", device=device)
test = MNISTHard(split="test", size=16, seed=1)  # fresh test images, never seen in training
image = test.images[0]  # (C, H, W) = (1, 80, 80)
images = image[None].to(device)  # (B, C, H, W) with B = 1
labels = test.labels[:1]  # (B, L): the digits in the image, -1 marks padding
print("digits in the image:", sorted(int(v) for v in labels[0] if v >= 0))
print("K =", autoencoder.config.k, "patches of", autoencoder.config.patch_size, "x",
      autoencoder.config.patch_size, "pixels")  # fmt: skip

# %% [markdown]
# ## 5.1 The patch auto-encoder
#
# For reconstruction, $\mathcal{T}_\tau$ is an auto-encoder applied to each patch on its own (§5.1), with the
# layout of §8: a $32 \times 32 \times C$ input, five levels down (three ResNet blocks, then a $2 \times 2$
# max-pooling, channels doubling from 8 to 128) to a $128 \times 1 \times 1$ code, five levels up
# (transposed convolutions) and a sigmoid output, with layer normalisation before the convolutions. The
# checkpoint shipped with this book uses the compact version of chapter 8 (`mistlib.compact`: one strided
# convolution per level), which a CPU trains in minutes, with the 128-number code of §8 (compact's default
# is 64; the larger code reconstructs the crowded MNIST-hard digits better, chapter 9 §9.11). The cell
# below prints which network it loaded and the size of its code.
#
# One design choice matters for MIST as a whole: the encoder and decoder are joined **only** through that
# code, with no U-Net style skip connections. With skips, the decoder could copy any window straight to its
# output, every window would reconstruct equally well, and the reconstruction loss would give the heatmap no
# reason to prefer digits over background. Through a 128-number bottleneck, only windows that look like the
# recurring instances — centred digits of about the right size — come back well, and that is the signal
# the heatmap learns from (chapter 6).

# %%
net = autoencoder.task_net
count = {name: sum(p.numel() for p in part.parameters()) for name, part in
         [("encoder", net.encoder), ("decoder", net.decoder)]}  # fmt: skip
with torch.no_grad():
    out = autoencoder(images)  # heatmap, keypoints, patches, decoded patches, reconstruction
    codes = net.encode(out.patches)  # (B, K, D)
print(f"encoder {count['encoder']:,} and decoder {count['decoder']:,} parameters")
print("patches", tuple(out.patches.shape), "-> codes", tuple(codes.shape), "-> decoded",
      tuple(out.task_output.shape))  # fmt: skip
compact = ae_experiment.model.task_network == "compact"
print("task network:", "compact (mistlib.compact)" if compact else "§8", f"({codes.shape[-1]}-number code)")
assert codes.shape[-1] == (ae_experiment.model.task_code if compact else 128)  # the bottleneck
assert float(out.task_output.min()) > 0 and float(out.task_output.max()) < 1  # sigmoid output
with torch.no_grad():
    assert torch.allclose(net.decode(codes), out.task_output)  # the code is the only path to the output

# %% [markdown]
# ## 5.2 $\mathcal{S}^{-1}$ and eq. (6): the image as a sum of placed patches
#
# To compare decoded patches with the image, they have to go back where they came from. The inverse sampler
# $\mathcal{S}^{-1}(\mathbf{P}, \mathbf{x})$ starts from an all-zero image and writes the patch
# $\mathbf{P}$ into the window $\mathbf{x} = (x, y, s)$, resampling it from $P \times P$ to $s \times s$
# pixels by bilinear interpolation. The reconstruction is the sum of the K placed patches, and the task loss
# is its squared distance to the input (eq. 6):
#
# $$\mathcal{L}_{\text{task}}
#   = \Big\| \mathbf{I} - \sum_{k=1}^{K} \mathcal{S}^{-1}(\mathbf{P}_k, \mathbf{x}_k) \Big\|_2^2 .$$
#
# Where windows overlap, the placed patches add up, so each decoded patch must leave room for its
# neighbours' ink. `mistlib.losses.reconstruction_loss` returns the mean over pixels rather than the sum,
# which only rescales the learning rate.
#
# **Our MNIST models combine the placed patches by a maximum instead.** The sum has a side effect during
# training: two windows on one digit draw it twice, and the cheapest way to lower eq. (6) is then to push
# the windows apart, off the digit. That is what made lifting collapse in our runs (chapter 6, finding 5).
# Our MNIST scenes are themselves composited by a pixelwise maximum (chapter 2), so the shipped
# reconstruction models use `MISTConfig(composite="max")`: $\max_k \mathcal{S}^{-1}(\mathbf{P}_k,
# \mathbf{x}_k)$ in place of the sum, everything else unchanged. The library keeps both
# (`reconstruct(..., composite="sum" | "max")`); the paper's eq. (6) is the sum.
#
# The figure runs the model's reconstruction on the test image. Top: the input with its K windows, the
# reconstruction, and the residual (red: ink the reconstruction is missing; blue: ink it adds). Below, one
# column per patch: the extracted patch $\mathbf{P}_k$, its decoding $\mathcal{T}(\mathbf{P}_k)$, that
# decoding placed back by $\mathcal{S}^{-1}$, and the combination (here the maximum) of the first $k$
# placed patches.

# %%
keypoints, patches, decoded = out.keypoints[0], out.patches[0], out.task_output[0]
composite = autoencoder.config.composite  # "max" for our MNIST models, "sum" is eq. (6) as written
fig = show_reconstruction_steps(image, keypoints, decoded, patches, composite=composite)
fig

# %% [markdown]
# The checks behind the figure: the maximum of the separately placed patches is the library's
# `reconstruct`, which is the model's own reconstruction (MNIST sits on a black canvas, so the background
# $b$ of `MISTConfig` is 0); the loss is the mean squared residual, i.e. eq. (6) divided by the number of
# pixels; at the same windows, the sum would count overlapping ink twice; and $\mathcal{S}^{-1}$ really
# inverts $\mathcal{S}$: a window aligned with the pixel grid and as large as the patch, cut out and
# placed back, reproduces the image inside the window and zeros outside.

# %%
canvases = place_patches(out.task_output, out.keypoints, (80, 80))  # (B, K, C, H, W): one per patch
assert autoencoder.config.background == 0.0 and composite == "max"
combined = canvases.amax(1)  # (B, C, H, W): the brightest placed patch at each pixel
assert torch.allclose(combined, reconstruct(out.task_output, out.keypoints, (80, 80), composite))
assert torch.allclose(combined, out.reconstruction)
residual = images - out.reconstruction
loss = reconstruction_loss(images, out.task_output, out.keypoints, composite=composite)
assert torch.allclose(loss, residual.pow(2).sum() / residual.numel())  # eq. (6) / (C H W)
assert torch.allclose(loss, autoencoder.task_loss(images, out))
summed = reconstruction_loss(images, out.task_output, out.keypoints)  # eq. (6) as written
assert summed > loss  # the sum draws overlapping ink twice
print(f"on this image: squared norm {float(residual.pow(2).sum()):.2f}, mean {float(loss):.5f} "
      f"(the sum at the same windows: mean {float(summed):.5f})")  # fmt: skip

aligned = torch.tensor([[[39.5, 39.5, 32.0]]])  # x - (s - 1) / 2 = 24: the window is pixels 24..55
back = place_patches(sample_patches(images, aligned, size=32), aligned, (80, 80))[0, 0]  # (C, H, W)
torch.testing.assert_close(back[:, 24:56, 24:56], image[:, 24:56, 24:56], rtol=0, atol=1e-6)  # the crop
outside = back.clone()
outside[:, 24:56, 24:56] = 0
assert not outside.any()  # nothing outside the window

# %% [markdown]
# ### Place the patches one by one
#
# The slider sets how many of the K decoded patches are placed, in the extractor's order (strongest pick
# first), and the residual shows what is still missing. The model runs once; only the number of patches
# combined changes. The figure of every count is computed in advance, so the slider works on the static
# website too (in JupyterLab each change is also redrawn live); the cell after the widget draws the first
# three.

# %%
placing = reconstruction_widget(autoencoder, image)
display(placing)

# %%
fig = show_partial_reconstruction(image, keypoints, decoded, placed=3, composite=composite)
fig

# %% [markdown]
# Adding a patch changes the image only inside that patch's window (up to the half-pixel blur of bilinear
# interpolation at the window's edge), which is what makes eq. (6), with the sum or the max, a combination
# of *local* terms:

# %%
for k in range(len(keypoints)):
    x, y, s = keypoints[k].tolist()
    changed = canvases[0, k, 0].abs() > 0  # (H, W) where patch k adds anything
    rows, cols = changed.nonzero(as_tuple=True)
    if len(rows):
        assert float((cols - x).abs().max()) <= s / 2 + 0.5 and float((rows - y).abs().max()) <= s / 2 + 0.5

# %% [markdown]
# ## 5.3 Multiple-instance classification
#
# For classification, $\mathcal{T}_\tau$ is the same encoder followed by one dense layer to C = 10 class
# scores $\hat{\mathbf{y}}_k$ per patch (§8), turned into probabilities
# $\hat{\mathbf{p}}_k = \mathrm{softmax}(\hat{\mathbf{y}}_k)$. The supervision is weak: for each image we know
# *which digits* it contains (with repeats), never *where*. Eq. (7) compares two histograms over the
# classes — the labels' $\mathbf{q} = \frac1L \sum_l \mathbf{y}_l$, with $\mathbf{y}_l$ one-hot, and the
# patches' average prediction $\mathbf{p} = \frac1K \sum_k \hat{\mathbf{p}}_k$ — by cross-entropy:
#
# $$\mathcal{L}_{\text{task}} = H(\mathbf{q}, \mathbf{p}) = -\sum_{c} q_c \log p_c .$$
#
# The loss cannot tell which patch predicted which class: shuffle the patches, or the labels, and it stays
# the same. That is exactly what lets it train without positions, and it also means the heatmap has to find
# digits on its own for the classifier to be right. Its minimum over $\mathbf{p}$ is reached at
# $\mathbf{p} = \mathbf{q}$, where it equals the entropy of $\mathbf{q}$: zero only if all labels agree.
#
# The figure shows the classifier on the test image: each window with its most likely class, the table of
# the $\hat{\mathbf{p}}_k$, and the two histograms eq. (7) compares.

# %%
with torch.no_grad():
    cl_out = classifier(images)
probs = cl_out.logits[0].softmax(-1)  # (K, N) the p_hat_k
fig = show_instance_loss(probs, labels[0], image, cl_out.keypoints[0])
fig

# %%
loss_7 = multi_instance_loss(cl_out.logits, labels)
q = label_histogram(labels[0], 10)  # (N,)
p = probs.mean(0)  # (N,)
assert torch.allclose(loss_7, -(q * p.log()).sum(), atol=1e-6)
assert torch.allclose(loss_7, classifier.task_loss(images, cl_out, labels))
shuffled = cl_out.logits[:, torch.randperm(cl_out.logits.shape[1])]  # the patches in another order
assert torch.allclose(multi_instance_loss(shuffled, labels), loss_7)
entropy = -(q[q > 0] * q[q > 0].log()).sum()
assert float(loss_7) >= float(entropy) - 1e-6  # never below the entropy of q
print(f"H(q, p) = {float(loss_7):.4f} on this image; its floor, the entropy of q, is {float(entropy):.4f}")
print("most likely class per patch:", probs.argmax(-1).tolist())

# %% [markdown]
# ## 5.4 Eq. (7) by hand
#
# A small case that fits on paper: K = 3 patches, N = 4 classes, and an image holding two digits, a 1 and a
# 3 (L = 2). The label histogram is $\mathbf{q} = (0, \tfrac12, 0, \tfrac12)$. Suppose the classifier
# outputs these probabilities (we choose the logits as their logarithms, so the softmax gives them back
# exactly):
#
# | patch | class 0 | class 1 | class 2 | class 3 | what it looks like |
# |---|---|---|---|---|---|
# | 1 | 0.1 | 0.7 | 0.1 | 0.1 | a fairly clear 1 |
# | 2 | 0.1 | 0.1 | 0.1 | 0.7 | a fairly clear 3 |
# | 3 | 0.25 | 0.25 | 0.25 | 0.25 | a patch on background: no opinion |
# | $\mathbf{p}$ (mean) | 0.15 | 0.35 | 0.15 | 0.35 | |
#
# Only the classes present in the labels count in the sum:
#
# $$H(\mathbf{q}, \mathbf{p}) = -\tfrac12 \log 0.35 - \tfrac12 \log 0.35 = -\log 0.35 \approx 1.0498 .$$
#
# The floor is the entropy of $\mathbf{q}$, $\log 2 \approx 0.6931$, reached when $\mathbf{p} = \mathbf{q}$.
# Below, the same computation with plain Python floats, step by step, against `multi_instance_loss`.

# %%
table = [[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7], [0.25, 0.25, 0.25, 0.25]]  # p_hat_k, K = 3, N = 4
example_logits = torch.tensor(table).log()[None]  # (B, K, N) = (1, 3, 4): log-probabilities as logits
example_labels = torch.tensor([[1, 3]])  # (B, L) = (1, 2)

# step 1: softmax of each patch's logits, by hand
soft = []
for row in example_logits[0].tolist():
    total = sum(math.exp(v) for v in row)
    soft.append([math.exp(v) / total for v in row])
# step 2: the two histograms
p_hand = [sum(patch[c] for patch in soft) / 3 for c in range(4)]
q_hand = [sum(1 for label in (1, 3) if label == c) / 2 for c in range(4)]
# step 3: cross-entropy, eq. (7)
h_hand = -sum(q_c * math.log(p_c) for q_c, p_c in zip(q_hand, p_hand, strict=True) if q_c > 0)
print("p =", [round(v, 4) for v in p_hand], " q =", q_hand, f" H(q, p) = {h_hand:.4f}")

assert math.isclose(h_hand, -math.log(0.35), rel_tol=1e-5)
assert math.isclose(h_hand, float(multi_instance_loss(example_logits, example_labels)), rel_tol=1e-5)
at_floor = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).clamp(min=1e-12).log()[None]  # one patch predicting q
assert math.isclose(float(multi_instance_loss(at_floor, example_labels)), math.log(2), rel_tol=1e-5)

# %%
title = f"worked example: H(q, p) = {h_hand:.4f}"
fig = show_instance_loss(torch.tensor(table), example_labels[0], title=title)
fig

# %% [markdown]
# The third patch shows a trap of eq. (7) when K is larger than the number of digits: a patch with nothing
# to say still counts in the average and dilutes $\mathbf{p}$. With only the first two patches,
# $\mathbf{p} = (0.1, 0.4, 0.1, 0.4)$ and the loss falls to $-\log 0.4 \approx 0.916$. To reach the floor, the
# extra patch would itself have to predict the label histogram $(0, \tfrac12, 0, \tfrac12)$ — or, better,
# land on a digit.

# %%
two = multi_instance_loss(example_logits[:, :2], example_labels)
assert math.isclose(float(two), -math.log(0.4), rel_tol=1e-5)
print(f"with patches 1 and 2 only: H(q, p) = {float(two):.4f}")

# %% [markdown]
# ## 5.5 The squared-histogram variant
#
# The authors' public code also contains a variant that compares the same two histograms by half their
# squared distance instead of the cross-entropy,
#
# $$\mathcal{L}_{\text{sq}} = \tfrac12 \sum_c (p_c - q_c)^2 ,$$
#
# available as `mistlib.losses.histogram_loss_sq` (the shipped checkpoints were trained with eq. 7). It is
# zero at $\mathbf{p} = \mathbf{q}$ whatever the labels, bounded, and gentle: its gradient shrinks linearly
# near the target and stays finite when some $p_c$ goes to zero, whereas the cross-entropy's $-\log p_c$
# punishes a missing class without limit. On the worked example, $\mathbf{p} - \mathbf{q} = (0.15, -0.15,
# 0.15, -0.15)$, so $\mathcal{L}_{\text{sq}} = \tfrac12 \cdot 4 \cdot 0.0225 = 0.045$.

# %%
sq_hand = 0.5 * sum((p_c - q_c) ** 2 for p_c, q_c in zip(p_hand, q_hand, strict=True))
assert math.isclose(sq_hand, 0.045, rel_tol=1e-5)
assert math.isclose(sq_hand, float(histogram_loss_sq(example_logits, example_labels)), rel_tol=1e-5)
assert float(histogram_loss_sq(at_floor, example_labels)) < 1e-12  # zero at p = q, unlike eq. (7)
print(f"squared-histogram loss: {sq_hand:.4f} on the worked example, "
      f"{float(histogram_loss_sq(cl_out.logits, labels)):.4f} on the test image")  # fmt: skip

# %% [markdown]
# ## Summary
#
# - The task network $\mathcal{T}_\tau$ processes each of the K patches on its own, with shared weights; only
#   it and the loss change between tasks (§5).
# - For reconstruction it is an auto-encoder with a narrow bottleneck and no skips (§8: 128 numbers; the
#   compact one we ship: 64), so that only
#   windows holding a typical instance decode well. $\mathcal{S}^{-1}$ places each decoded patch back in its
#   window, and eq. (6) compares the sum of the placed patches with the image (our MNIST models: their
#   pixelwise maximum, which does not reward pushing overlapping windows apart).
# - For classification it is the same encoder plus a dense layer. Eq. (7) compares the label histogram with
#   the mean patch prediction by cross-entropy: no positions needed, invariant to the order of patches and
#   labels, with the entropy of the labels as its floor.
# - `histogram_loss_sq` swaps the cross-entropy for half a squared distance between the same histograms.
#
# ## Exercises
#
# 1. In the worked example, keep the first two patches as they are. Can the third patch bring eq. (7) down
#    to its floor $\log 2$? What is the best it can predict? Check with `multi_instance_loss`.
#
# <details><summary>Solution</summary>
#
# The mean must equal $\mathbf{q}$: $\frac13(\hat{\mathbf{p}}_1 + \hat{\mathbf{p}}_2 + \hat{\mathbf{p}}_3) =
# (0, \tfrac12, 0, \tfrac12)$. Since $\hat{\mathbf{p}}_1 + \hat{\mathbf{p}}_2 = (0.2, 0.8, 0.2, 0.8)$, the
# third would need $(-0.2, 0.7, -0.2, 0.7)$, which is not a probability vector: no third patch can reach the
# floor while the first two give 0.1 to classes 0 and 2. The best it can do is $(0, 0.5, 0, 0.5)$, giving
# $\mathbf{p} = (0.0667, 0.4333, 0.0667, 0.4333)$ and $H = -\log 0.4333 \approx 0.836$:
#
# ```python
# third = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7], [1e-9, 0.5, 1e-9, 0.5]]).log()[None]
# multi_instance_loss(third, torch.tensor([[1, 3]]))  # tensor(0.8362)
# ```
#
# </details>
#
# 2. An image holds the digits 7, 7 and 2. Write $\mathbf{q}$, and compute the loss of eq. (7) when all
#    K = 3 patches predict the uniform distribution over 10 classes.
#
# <details><summary>Solution</summary>
#
# $\mathbf{q}$ has $\tfrac23$ at class 7 and $\tfrac13$ at class 2. With $\mathbf{p}$ uniform, every
# $\log p_c = -\log 10$, so $H = \log 10 \approx 2.3026$, whatever $\mathbf{q}$ is.
# `multi_instance_loss(torch.zeros(1, 3, 10), torch.tensor([[7, 7, 2]]))` returns the same.
#
# </details>
#
# 3. Why would U-Net skip connections in the auto-encoder break MIST's reconstruction task? Test it: compare
#    the reconstruction loss of the model at its own keypoints with that at K random windows.
#
# <details><summary>Solution</summary>
#
# With skips, fine detail bypasses the bottleneck, so *any* window, digit or background, can be copied to the
# output: eq. (6) then rewards covering the ink with windows, not finding instances, and the heatmap gets no
# signal about what an instance is. Without skips, only windows that resemble the training instances decode
# well. A test:
#
# ```python
# generator = torch.Generator().manual_seed(0)
# random_kp = torch.cat([torch.rand(1, 9, 2, generator=generator) * 60 + 10, torch.full((1, 9, 1), 20.0)], -1)
# at_random = autoencoder.run_task(images, random_kp)
# print(float(autoencoder.task_loss(images, out)), float(autoencoder.task_loss(images, at_random)))
# ```
#
# With a well-trained model, the loss at its own keypoints is clearly lower.
#
# </details>
