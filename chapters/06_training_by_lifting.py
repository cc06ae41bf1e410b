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
# # 6. Training by lifting
#
# Chapters 3–5 built a MIST as the chain
# $\mathcal{T}_\tau(\mathcal{S}(I, \mathcal{E}_K(\mathcal{H}_\eta(I))))$ and never asked how the heatmap
# network $\mathcal{H}_\eta$ learns. This chapter answers it, following §6 of the
# paper: the top-K extractor $\mathcal{E}_K$ blocks almost every gradient, so the paper *lifts* the problem,
# introducing the keypoints and the heatmap as free variables and optimising them in turn (Algorithm 1,
# eq. 8–14).
#
# **What you will learn**
#
# - why back-propagating through top-K gives the heatmap network a gradient at K pixels only, and no
#   gradient at all for *where* the patches are;
# - how eq. (8)–(14) turn one hard problem into three easy stages: a task update, a keypoint refinement
#   with the task network frozen, and a regression of the heatmap onto $\bar{\mathbf{h}} =
#   \mathcal{E}_K^{-1}(\{\mathbf{x}^*_k\})$;
# - what each stage does to a real batch (`LiftingTrainer.inspect`), and how a recorded training run evolved
#   (a scrubber over the training log);
# - how a few dozen lifting steps move the keypoints of a fresh model on the CPU;
# - how lifting compares with naive top-K back-propagation, and what made lifting hard to get working in
#   our reproduction.

# %%
# %matplotlib inline
import copy
import dataclasses
import time

import torch
from IPython.display import display

from mistlib.data import MNISTHard
from mistlib.evaluation import evaluate
from mistlib.experiments import checkpoint_dir, pretrained
from mistlib.extract import lift_target, topk_extract
from mistlib.lifting import LiftingConfig, LiftingTrainer
from mistlib.model import MIST, MISTConfig
from mistlib.tables import PAPER
from mistlib.traininglog import TrainingLog
from mistlib.viz.training import (
    compare_methods,
    plot_losses,
    show_gradient_support,
    show_keypoint_moves,
    show_lifting_stage,
    training_scrubber_widget,
)

device = "cpu"  # every number below is computed on the CPU; "cuda" runs the same code on a GPU
torch.manual_seed(0)

model, experiment, meta = pretrained("reconstruct-mnist-hard-mist", device=device)
print(f"{experiment.name}: {meta['steps']} training steps on {meta['device']}")
print("trained with:", meta.get("command", "(command not recorded)"))

# %% [markdown]
# The checkpoint above was trained with the **CPU budget** of `mistlib.experiments.recipe`: the compact
# networks of chapter 8, 3,000 steps of batch 32 on one CPU core, with the choices that appendix chapter 9
# measures (stage 2 by a local search of the loss, keypoints picked by a slowly moving copy of the heatmap
# network). The paper-sized recipe (the §4 and §8 networks, 6,000 steps) is meant for a GPU:
#
# ```
# mist train --task reconstruct --data mnist-hard --method mist --budget gpu \
#     --log runs/reconstruct-mnist-hard-mist.log.pt
# ```
#
# ## Why top-K gives the heatmap almost no gradient
#
# $\mathcal{E}_K$ (eq. 2–4, chapter 4) picks the K highest local maxima of the heatmap. Their positions
# $(x_k, y_k)$ are integers chosen by a sort: nudging a heatmap value changes them either not at all or by
# a jump, so their derivative with respect to the heatmap is zero wherever it exists. Only the scale
# $s_k$ (the weighted mean of eq. 4) depends smoothly on the heatmap, and only on the values at the K
# selected pixels.
# §6 spells out the consequence: a task loss back-propagated through $\mathcal{E}_K$ reaches the heatmap
# network at K pixels and never says "this other pixel should have been picked" or "this one should not".
# The network gets no negative examples.
#
# Let us measure it on one test image with the trained model: we make the heatmap a leaf tensor, extract
# the keypoints, run the task and back-propagate eq. (6).

# %%
test = MNISTHard("test", size=4, seed=1)
images = test.images.to(device)  # (4, 1, 80, 80)
k, scales, size = model.config.k, model.scales, tuple(images.shape[-2:])

heatmap = model.heatmap_net(images[:1]).detach().requires_grad_(True)  # (1, S, H, W)
keypoints = topk_extract(heatmap, k, scales, model.config.nms)  # (1, K, 3)
(position_grad,) = torch.autograd.grad(
    keypoints[..., :2].sum(), heatmap, retain_graph=True, materialize_grads=True
)
task_loss = model.task_loss(images[:1], model.run_task(images[:1], keypoints))
(task_grad,) = torch.autograd.grad(task_loss, heatmap)

target = lift_target(keypoints.detach(), scales, size, sigma=0.0)  # h_bar of the current picks
(lift_grad,) = torch.autograd.grad(((heatmap - target) ** 2).mean(), heatmap)

task_pixels = int((task_grad[0].abs().sum(0) > 0).sum())
lift_pixels = int((lift_grad[0].abs().sum(0) > 0).sum())
print(f"gradient of the positions (x, y) w.r.t. the heatmap: {float(position_grad.abs().sum())}")
print(f"pixels reached by the task loss through top-K: {task_pixels} of {size[0] * size[1]} (K = {k})")
print(f"pixels reached by the lift loss of eq. (14):   {lift_pixels} of {size[0] * size[1]}")

# %%
assert float(position_grad.abs().sum()) == 0.0  # positions carry no gradient at all
assert 0 < task_pixels <= k  # the task loss touches at most the K picked pixels
# the lift loss speaks to every pixel where the heatmap differs from its target: far more than K of them
assert lift_pixels == int((heatmap != target).any(1).sum()) and lift_pixels > 10 * k

# %%
fig = show_gradient_support(
    images[0], keypoints[0].detach(), {"dL_task/dh via top-K": task_grad[0], "dL_lift/dh": lift_grad[0]}
)
fig

# %% [markdown]
# The middle panel is almost entirely dark: a handful of pixels, exactly the K picks, receive a gradient,
# and it can only shift the scale weights there. The right panel previews the fix. A regression of the
# heatmap onto a target $\bar{\mathbf{h}}$ has a gradient at every pixel where the two differ, which is
# nearly everywhere: it pushes up where the target has a keypoint and down everywhere else, and so supplies
# the negative examples that top-K cannot.
#
# ## Lifting: eq. (8)–(14) and Algorithm 1
#
# The paper writes training as the problem of eq. (1) with two constraints made explicit: the keypoints are
# whatever $\mathcal{E}_K$ returns on a heatmap $\bar{\mathbf{h}}$ (eq. 9), and that heatmap is what the
# network predicts, $\bar{\mathbf{h}} = \mathcal{H}_\eta(I)$ (eq. 10). Treating $\bar{\mathbf{h}}$ and
# $\{\mathbf{x}_k\}$ as variables of their own is the *lifting*: the optimisation gets more unknowns but a
# simpler structure. Eq. (11) then softens the hard equality (10) into a squared penalty
# $\|\bar{\mathbf{h}} - \mathcal{H}_\eta(I)\|^2$, and eq. (13)–(14) split the result into two sub-problems
# solved in alternation: the task loss over $\tau$ and the keypoints, and a least-squares fit of the heatmap
# network to $\bar{\mathbf{h}}$. Algorithm 1 runs both on every batch, in three stages:
#
# 1. **Task update** (line 3): extract $\mathbf{x} = \mathcal{E}_K(\mathcal{H}_\eta(I))$ with no gradient and
#    take one optimiser step on the task network $\tau$ with $\mathcal{L}_{task}$.
# 2. **Keypoint refinement** (lines 4–6): freeze $\tau$ and move the keypoints downhill on
#    $\mathcal{L}_{task}$ for N iterations: the sampler $\mathcal{S}$ is bilinear, so $\mathcal{L}_{task}$ is
#    differentiable in $(x, y, s)$ even though $\mathcal{E}_K$ is not. The result is $\{\mathbf{x}^*_k\}$.
# 3. **Heatmap regression** (lines 7–8): build $\bar{\mathbf{h}} = \mathcal{E}_K^{-1}(\{\mathbf{x}^*_k\})$,
#    a map that is zero except at the refined keypoints, and take one optimiser step on $\eta$ with
#    $\mathcal{L}_{lift} = \|\bar{\mathbf{h}} - \mathcal{H}_\eta(I)\|^2$ (eq. 14).
#
# `mistlib.lifting.LiftingTrainer` implements these stages. Where the paper leaves a choice open we made one
# and measured it (the last section of this chapter): a warm-up that trains only $\tau$ on random windows
# before lifting starts, a stage-2 step measured in pixels and scaled by the batch's gradient size, and the
# per-image weight $\exp(-5\,\mathcal{L}_{task})$ on $\mathcal{L}_{lift}$ that the authors' code uses.
# `LiftingTrainer.inspect` runs the three stages on a batch *without* updating any weight and returns every
# intermediate, which is what the next figures show.

# %%
config = dataclasses.replace(experiment.trainer_config(), device=device)
trainer = LiftingTrainer(model, experiment.task, config)
weights_before = copy.deepcopy(model.state_dict())
inspected = trainer.inspect(images)
rule = f"{config.refine_iterations} iterations of {config.refine_step} px, {config.refine_optimizer} rule"
print(f"stage 2: {rule}")
print("L_task of each image at the heatmap's picks:", ", ".join(f"{v:.3f}" for v in inspected["task_before"]))
moved = (inspected["refined"][..., :2] - inspected["keypoints"][..., :2]).norm(dim=-1)  # (B, K) in px
print(f"stage 2 moved the keypoints {moved.mean():.1f} px on average")
print(f"L_lift {inspected['lift'].mean():.1e} (the mean over the {len(images)} images)")

# %%
# inspect updated no weight
assert all(torch.equal(weights_before[name], value) for name, value in model.state_dict().items())
assert not torch.equal(inspected["refined"], inspected["keypoints"])  # stage 2 moved the keypoints
assert inspected["task_after"].mean() < inspected["task_before"].mean()  # and lowered the batch's L_task
# h_bar holds one unit of mass per keypoint, split between the two scales that bracket its s
torch.testing.assert_close(inspected["target"].sum((1, 2, 3)), torch.full((len(images),), float(k)))

# %% [markdown]
# ### Stage 1: the task update
#
# The blue windows are $\mathbf{x} = \mathcal{E}_K(\mathcal{H}_\eta(I))$, the picks of the current heatmap
# (second panel, the maximum over scales). Stage 1 trains the auto-encoder on exactly these windows; the
# keypoints themselves do not move. Green frames mark the panels a stage works on.

# %%
fig = show_lifting_stage(inspected, stage=1, scales=experiment.model.scales, sigma=config.target_sigma)
fig

# %% [markdown]
# ### Stage 2: keypoint refinement
#
# With $\tau$ frozen, each window slides (red arrows) from where the heatmap put it (dashed blue) to where
# the auto-encoder explains the image better (red). The third panel is the reconstruction at
# $\mathbf{x}^*$: the decoded patches placed back by $\mathcal{S}^{-1}$ and combined by their pixelwise
# maximum (eq. 6 with a max instead of the sum, chapter 5).

# %%
fig = show_lifting_stage(inspected, stage=2, scales=experiment.model.scales, sigma=config.target_sigma)
fig

# %% [markdown]
# ### Stage 3: heatmap regression
#
# $\bar{\mathbf{h}}$ (right; single pixels, enlarged so they can be seen) marks the refined keypoints and is
# zero elsewhere. The heatmap network is fitted to it: its values rise at the red dots and fall everywhere
# else. Next batch, $\mathcal{E}_K$ of the updated heatmap picks windows a little closer to where stage 2
# wanted them. That closes the loop of Algorithm 1.

# %%
fig = show_lifting_stage(inspected, stage=3, scales=experiment.model.scales, sigma=config.target_sigma)
fig

# %% [markdown]
# ## The recorded training run
#
# While the shipped model trained, the trainer recorded `inspect` of four fixed test images every few steps
# into a training log (`TrainingLog`). The scrubber below replays it: `step` moves through the snapshots (the
# title shows the real training step), `stage` picks the stage of Algorithm 1, and `image` the probe image.
# Snapshots from the warm-up are marked: during the warm-up only the auto-encoder trains, on random
# windows, so the stages shown there are what lifting *would* do. The log does not store
# $\bar{\mathbf{h}}$; the figure rebuilds it from the refined keypoints with `lift_target`. It stores images
# and heatmaps with 8 bits, so a faint heatmap (peaks near 0.01) looks posterised. The controls are live in
# JupyterLab; on the website they show their saved state.

# %%
log = TrainingLog.load(checkpoint_dir() / "reconstruct-mnist-hard-mist.log.pt")
warmup_steps = config.warmup_steps
scrubber = training_scrubber_widget(
    log, scales=experiment.model.scales, sigma=config.target_sigma, warmup_steps=warmup_steps
)
display(scrubber)

# %%
print(f"{len(log)} snapshots, steps {log.steps[0]} to {log.steps[-1]}; warm-up until step {warmup_steps}")
last = len(log) - 1
fig = show_lifting_stage(
    log.snapshot(last),
    stage=2,
    scales=experiment.model.scales,
    sigma=config.target_sigma,
    step=log.steps[last],
    warmup=log.steps[last] < warmup_steps,
)
fig

# %% [markdown]
# The loss history of the same run (each point averages `log_every` steps) shows the two phases: during the
# warm-up the task network alone learns to encode windows (grey); then lifting starts, and
# $\mathcal{L}_{task}$ is measured at the heatmap's own picks. $\mathcal{L}_{lift}$ is tiny in absolute
# terms because $\bar{\mathbf{h}}$ is zero at all but K of the $3 \times 80 \times 80$ entries and the
# heatmap is small almost everywhere.

# %%
history = meta["history"]
for entry in history[-3:]:  # the last three entries
    print("  ".join(f"{name} {value:.4g}" for name, value in entry.items()))
fig = plot_losses(history, warmup_steps=warmup_steps)
fig

# %% [markdown]
# ## A live lifting run on the CPU
#
# To see the stages at work, we train a fresh, small model (the slim heatmap network of the CPU budget: 16
# channels, 2 ResNet blocks) for a few dozen lifting steps on 64 training images. There is no warm-up and
# the auto-encoder starts untrained, so this is a demonstration of the mechanics, not the recipe: it shows
# keypoints that move because stage 3 reshapes the heatmap. The heatmap's learning rate is raised to
# $10^{-3}$ so that the motion is visible after so few steps. It takes well under a minute on two CPU
# cores.

# %%
torch.manual_seed(0)
small = MIST(MISTConfig(heatmap_channels=16, heatmap_blocks=2, composite="max")).to(device)  # as the recipe
live_config = LiftingConfig(
    steps=20, batch_size=8, refine_iterations=2, refine_step=1.0, lr_heatmap=1e-3, log_every=5, device=device
)
live = LiftingTrainer(small, "reconstruct", live_config)
train_images = MNISTHard("train", size=64, seed=0).images

with torch.no_grad():
    _, start_keypoints = small.extract(images)  # (4, K, 3) before training
first_look = live.inspect(images)  # the three stages once, without updating
heatmap_weights = [p.detach().clone() for p in small.heatmap_net.parameters()]
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a batch of 8 small images: one thread beats splitting each tiny op across two
started = time.perf_counter()
live.fit(train_images)
live_seconds = time.perf_counter() - started
torch.set_num_threads(threads)
with torch.no_grad():
    _, end_keypoints = small.extract(images)  # (4, K, 3) after training
nearest = torch.cdist(end_keypoints[..., :2], start_keypoints[..., :2]).min(-1).values  # (4, K) in px

# %% [markdown]
# The run's own record. A few dozen steps of training amplify the last bits of every convolution, and those
# differ between processors (and, for some kernels, thread counts): the digits below are those of the
# machine that built this page, yours will differ a little. The check cell after them states, with
# tolerances, what holds on every machine.

# %%
# NBVAL_IGNORE_OUTPUT
for entry in live.history:
    print(
        f"step {entry['step']:2d}: L_task {entry['task']:.4f}  L_lift {entry['lift']:.4e}"
        f"  stage 2 moved the keypoints {entry['moved_px']:.2f} px"
    )
print(
    f"picks that moved: {int((nearest > 0).sum())} of {nearest.numel()}; mean distance to the nearest "
    f"old pick {nearest.mean():.1f} px"
)
print(f"{live_config.steps} lifting steps took {live_seconds:.1f} s on the CPU")

# %% [markdown]
# Checks of what the text claims: stage 2 changes the keypoints, stage 3 changes the heatmap network (the only
# optimiser that holds its weights is stage 3's: stage 1's holds the task network alone), the task loss at the
# heatmap's picks falls, and the keypoints that the trained heatmap picks are not those of the fresh one.

# %%
assert not torch.equal(first_look["refined"], first_look["keypoints"])  # stage 2 changes x
task_parameters = {id(p) for group in live.optimizers["task"].param_groups for p in group["params"]}
assert not task_parameters & {id(p) for p in small.heatmap_net.parameters()}  # stage 1 cannot touch eta
pairs = zip(heatmap_weights, small.heatmap_net.parameters(), strict=True)
changed = [not torch.equal(before, after) for before, after in pairs]
assert any(changed)  # so stage 3 changed the heatmap network's weights
first, last = live.history[0], live.history[-1]
assert last["task"] < 0.95 * first["task"]  # the task loss at the heatmap's picks fell by over 5%
# 2 iterations that move a keypoint with a typical gradient by 1 px each: about 1-2 px on average
assert all(0.5 < entry["moved_px"] < 3.0 for entry in live.history)
assert (nearest > 0).float().mean() > 2 / 3 and nearest.mean() > 4.0  # most picks moved, and far

# %%
fig = show_keypoint_moves(
    images, start_keypoints, end_keypoints, labels=("fresh model", "after 20 steps"), arrows=False
)
fig

# %% [markdown]
# ## Naive top-K versus lifting
#
# The ablation §6 argues for: the same MIST, trained either by lifting or by plain back-propagation through
# top-K (`method="naive"`: the heatmap learns only through the scale weights at the K picks, see
# `mistlib.baselines`). Both checkpoints were trained with the same budget. Below, on the same four test
# images, the first row of each method shows its detections (cyan windows; ground-truth digit boxes in
# orange) and the second row its reconstruction.

# %%
naive, naive_experiment, _ = pretrained("reconstruct-mnist-hard-naive", device=device)
with torch.no_grad():
    naive_out, mist_out = naive(images), model(images)
fig = compare_methods(
    images.cpu(),
    {
        "naive top-K": (naive_out.keypoints.cpu(), naive_out.reconstruction.cpu()),
        "lifting (MIST)": (mist_out.keypoints.cpu(), mist_out.reconstruction.cpu()),
    },
    boxes=test.boxes,
)
fig

# %% [markdown]
# The reconstruction error on 64 fresh test images (`evaluate`, seed 1; chapter 7 uses 1,000) and the share
# of digits found by a window with IoU ≥ 0.5, with the paper's RMSE for MIST on MNIST hard (Table 1; the
# paper reports no number for the naive variant). With CPU-budget checkpoints, expect both far from the
# paper.

# %%
scores = {}
for name, (net, exp) in {"naive top-K": (naive, naive_experiment), "lifting": (model, experiment)}.items():
    scores[name] = evaluate(net, exp, size=64)
    print(f"{name:12s} RMSE {scores[name]['rmse']:.2f}   IoU>=0.5 {scores[name]['iou50']:.2f}")
print(f"{'paper MIST':12s} RMSE {PAPER[('reconstruct', 'mnist-hard', 'mist')]['rmse']:.3f}")
assert all(0 < score["rmse"] < 1 for score in scores.values())

# %% [markdown]
# ## MIST as in the paper, and as in this book
#
# Algorithm 1 as written did not learn on our CPU-sized models: the loop heatmap → keypoints → task
# network → refined keypoints → heatmap first improved on the untrained network and then slid back below
# it. Appendix chapter 9 shows those learning curves and what changed them; `research/README.md` has every
# run with its command. The models shipped with this book depart from the paper in these places (MIST as
# in the paper vs this book), each a switch in `mistlib`:
#
# - **Composite.** Eq. (6) sums the placed patches; for MNIST we take their pixelwise maximum
#   (`MISTConfig.composite`): the sum pushes overlapping windows apart, off the digits (research log §6).
# - **Suppression.** A 5 × 5 non-maximum suppression before the top-K (`nms=5`), as the authors' code does:
#   without it the picks pile onto one digit (§8, chapter 4).
# - **Warm-up.** 500 steps of $\tau$ alone, per patch, on the heatmap's picks: an auto-encoder that cannot
#   yet encode a digit sends stage 2 anywhere (§2).
# - **Stage 2 by search.** Instead of gradient steps on $\mathbf{x}$, each keypoint tries ±1 px moves and
#   keeps the one that lowers $\mathcal{L}_{task}$ most (`refine_optimizer="search"`): the gradient rule
#   collapsed after 500 lifting steps, the search learned further (§9, chapter 9).
# - **A slow picker.** Stage 1 picks from a 0.99 moving average of $\eta$ (`pick_ema`): the search alone
#   also fell back, with the average the curve held (§9).
# - **Lift weights.** The authors' $\exp(-5\,\mathcal{L}_{task})$ per image, divided by its batch mean: a
#   cross-entropy of ~2 had shrunk every classification weight to ~$10^{-5}$ (§9).
# - **Networks.** The `compact` networks of `mistlib.presets`, the heatmap at 0.4 × resolution: 17 × faster
#   on 2 cores (chapter 8).
#
# The targets stay those of §6: $\bar{\mathbf{h}} = \mathcal{E}_K^{-1}$ of the refined keypoints, no location
# labels, K the only supervision for reconstruction.
#
# ## Summary
#
# - Top-K selection passes no gradient to the keypoint positions and reaches the heatmap at K pixels only,
#   through the scale weights: a heatmap trained this way never learns where *not* to look (§6).
# - Lifting (eq. 8–14) makes the keypoints and a target heatmap $\bar{\mathbf{h}}$ free variables and
#   alternates: update $\tau$ at the current picks, refine the keypoints with $\tau$ frozen (the bilinear
#   sampler makes this differentiable), and regress $\mathcal{H}_\eta(I)$ onto
#   $\bar{\mathbf{h}} = \mathcal{E}_K^{-1}(\{\mathbf{x}^*_k\})$, whose gradient reaches every pixel.
# - `LiftingTrainer.inspect` shows the three stages on any batch; the training log replays them over a run.
# - Stage 2 is only as good as the task loss it follows. On our CPU models a local search of that loss, and
#   keypoints picked by a slowly moving copy of the heatmap network, are what turned a loop that collapsed
#   into one that keeps learning (chapter 9).
#
# ## Exercises
#
# **1.** Check the round trip behind stage 3 on the batch inspected above: extracting K keypoints from
# $\bar{\mathbf{h}}$ gives back the refined keypoints, rounded to the nearest pixel (when no two of them
# round to the same pixel).
#
# <details><summary>Solution</summary>
#
# ```python
# back = topk_extract(inspected["target"], k, model.scales)  # (B, K, 3)
# rounded = torch.floor(inspected["refined"][..., :2] + 0.5)
# for b in range(len(images)):
#     if len({tuple(p) for p in rounded[b].tolist()}) == k:  # all distinct pixels
#         got = sorted(map(tuple, back[b, :, :2].tolist()))
#         assert got == sorted(map(tuple, rounded[b].tolist()))
# ```
#
# Each keypoint puts a unit mass at its rounded pixel, split between the two bracketing scales so that the
# scale moment of eq. (4) equals its $s$; those K pixels are the only non-zero ones, so top-K returns them.
# </details>
#
# **2.** Rerun the live run with `refine_optimizer="adam"` in `live_config`. How does the printed stage-2
# motion change, and why?
#
# <details><summary>Solution</summary>
#
# ```python
# torch.manual_seed(0)
# adam_model = MIST(MISTConfig(heatmap_channels=16, heatmap_blocks=2))
# adam_run = LiftingTrainer(adam_model, "reconstruct",
#                           dataclasses.replace(live_config, refine_optimizer="adam"))
# adam_run.fit(train_images)
# print([round(entry["moved_px"], 2) for entry in adam_run.history])
# ```
#
# The stage-2 motion is clearly larger than with the scaled rule. A freshly started Adam moves each
# coordinate by close to the full step whatever the size of its gradient (its first update is exactly
# `lr * sign(gradient)`), so every keypoint travels up to $\sqrt{2}$ px per iteration, signal or not. The
# scaled rule moves a keypoint in proportion to its gradient, so one with little signal barely moves. That
# is what section 3 of the research log measured.
# </details>
#
# **3.** Why does a target that is zero almost everywhere help? Compute the gradient of
# $\mathcal{L}_{lift}$ for one inspected image and check its sign away from the refined keypoints.
#
# <details><summary>Solution</summary>
#
# ```python
# h = inspected["heatmap"][:1].clone().requires_grad_(True)
# (grad,) = torch.autograd.grad(((h - inspected["target"][:1]) ** 2).mean(), h)
# away = inspected["target"][:1] == 0
# print(float((grad[away] >= 0).float().mean()))  # 1.0: gradient descent lowers h there
# ```
#
# Where $\bar{\mathbf{h}} = 0$ the gradient is $2\mathcal{H}_\eta(I)/N \ge 0$, so a descent step lowers the
# heatmap at every pixel that was not chosen: these are the negative examples the top-K gradient lacks.
# </details>
