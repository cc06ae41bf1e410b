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
# # 8. Implementation details
#
# Section 8 of the paper fixes the layout of the patch auto-encoder and the classifier in a few sentences;
# §4 does the same for the heatmap network. A few sentences leave room for interpretation, so this chapter
# shows what *our* networks are, generated from the modules themselves rather than written by hand: every
# table below is produced by running the network once and recording what each layer outputs. Then come
# the training hyper-parameters, the compute cost, and the commands that retrain every number of the book.
#
# **What you will learn**
#
# - the exact architecture of $\mathcal{H}_\eta$ (the §4 default and the slim variant used for CPU
#   training), of the patch auto-encoder $\mathcal{T}_\tau$ and of the patch classifier, with output shapes
#   and parameter counts, and where we depart from the paper's description;
# - the hyper-parameters of every training recipe, at the GPU and the CPU budget;
# - where the compute goes (FLOPs per image) and how long a training step takes on a CPU;
# - how to retrain any checkpoint, or a whole table, with one command.

# %% [markdown]
# ## Setup

# %%
# %matplotlib inline
import dataclasses
import shlex
import time

import torch

from mistlib.cli import build_parser
from mistlib.data import MNISTHard
from mistlib.experiments import build_model, build_trainer, checkpoint_dir, pretrained, recipe
from mistlib.heatmap import HeatmapNet
from mistlib.model import MISTConfig
from mistlib.presets import preset
from mistlib.tables import PAPER
from mistlib.tasks import PatchAutoencoder, PatchClassifier, ResBlock
from mistlib.viz.results import config_table, count_flops, layer_table, show_compute

torch.manual_seed(0)
device = "cpu"  # the timings below are CPU timings; "cuda" would time a GPU instead
image = torch.rand(1, 1, 80, 80)  # (B, C, H, W): one 80 x 80 image, as in all our data sets
patch = torch.rand(1, 1, 32, 32)  # (N, C, P, P): one 32 x 32 patch, the task networks' input (§8)
full = MISTConfig()  # the defaults follow §4 and §8
slim = preset("compact")  # the networks of the CPU recipe
hard = recipe("reconstruct", "mnist-hard", "mist", budget="cpu").model  # what it trains on MNIST hard
print("default heatmap:", full.heatmap_channels, "channels,", full.heatmap_blocks, "blocks")
print("CPU-budget heatmap:", slim.heatmap_channels, "channels,", slim.heatmap_blocks, "blocks")
print("CPU-budget heatmap on MNIST hard:", hard.heatmap_channels, "channels,", hard.heatmap_blocks, "blocks")

# %% [markdown]
# ## 8.1 The heatmap network $\mathcal{H}_\eta$
#
# §4 describes a fully convolutional network with 32 channels and 4 ResNet blocks that never downsamples,
# so that the heatmap has the image's resolution, followed by the local spatial softmax. Its multiscale
# trick: the *same* network runs on the image resized by `reference_size / s` for every scale $s$ of the
# scale space, and each score map is resized back. The table shows it plainly — every layer is called
# three times, once per scale (scales 16, 20 and 25 px at a reference of 20 px give images of 100, 80 and
# 64 pixels a side). The softmax and the resizing have no weights and are not modules, so they do not
# appear; the last line is the network's output, one heatmap channel per scale.

# %%
heatmap = HeatmapNet(full.heatmap_config())
print(layer_table(heatmap, image, max_depth=3))

# %% [markdown]
# The CPU recipe halves the width and the depth (16 channels, 2 blocks): the parameters and the compute
# (§8.6) both shrink roughly eightfold, since both grow with width squared times depth. On MNIST hard, and
# for MIST on MNIST easy, it keeps the half depth but the full width of 32 channels: there the narrower
# trunk was what limited how well lifting localised the digits (appendix chapter 9 and `research/README.md`
# §14 and §20, which also measure what the width costs in training time).

# %%
heatmap_slim = HeatmapNet(slim.heatmap_config())
print(layer_table(heatmap_slim, image, max_depth=3))

# %% [markdown]
# The parameter count follows from the layout: a 3 x 3 stem from $C$ to $F$ channels, $N$ blocks of two
# 3 x 3 convolutions $F \to F$, and a 1 x 1 head to one channel, each with a bias:
#
# $$ 9CF + F \;+\; N \cdot 2\,(9F^2 + F) \;+\; (F + 1). $$
#
# The check cell compares the formula with the modules for both variants.


# %%
def heatmap_parameters(c: int, f: int, n: int) -> int:
    return 9 * c * f + f + n * 2 * (9 * f * f + f) + f + 1


for config, net in ((full, heatmap), (slim, heatmap_slim)):
    counted = sum(p.numel() for p in net.parameters())
    assert counted == heatmap_parameters(config.in_channels, config.heatmap_channels, config.heatmap_blocks)
    print(f"F = {config.heatmap_channels}, N = {config.heatmap_blocks}: {counted:,} parameters")
ratio = sum(p.numel() for p in heatmap.parameters()) / sum(p.numel() for p in heatmap_slim.parameters())
assert 7 < ratio < 9
print(f"default / CPU budget: {ratio:.1f} x the parameters")

# %% [markdown]
# ## 8.2 The patch auto-encoder $\mathcal{T}_\tau$
#
# §8: the input is a 32 x 32 x C patch; five down-sampling levels, each of three ResNet blocks whose
# channels double after every down-sampling; 3 x 3 stride-1 convolutions with ReLU; 2 x 2 max-pooling
# down, 2 x 2 stride-2 transposed convolutions up; a sigmoid at the output; layer normalisation before
# each convolution. Our reading (`mistlib.tasks.PatchAutoencoder`; `GroupNorm` with one group is layer
# normalisation over (C, H, W) with a per-channel affine):
#
# - channels 8, 16, 32, 64, 128 — the paper does not give the base width; 8 matches the authors'
#   classifier and keeps a checkpoint small;
# - the channels double through a 1 x 1 convolution after each pool, so every block keeps its width;
# - the input convolution sees the raw patch *without* a norm in front (normalising the patch would make
#   the network blind to contrast, and a faint stroke would look like a full digit);
# - no skip connections from encoder to decoder: through a 128-number bottleneck only the recurring
#   pattern (a centred digit) comes back well, which is what gives the heatmap a reason to find digits;
# - each block starts as the identity (its last convolution is initialised to zero).
#
# Each `3 x ResBlock` row stands for three blocks of two convolutions each; `max_depth=5` lists every
# convolution.

# %%
autoencoder = PatchAutoencoder(channels=full.in_channels, base_width=full.task_width)
print(layer_table(autoencoder, patch, max_depth=3))

# %% [markdown]
# The check cell counts the building blocks §8 names: 5 levels x 3 blocks on each side, 5 max-pools,
# 5 transposed convolutions, a sigmoid at the end, a norm before every convolution but the first.

# %%
modules = list(autoencoder.modules())
convs = [m for m in modules if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
norms = [m for m in modules if isinstance(m, torch.nn.GroupNorm)]
assert sum(isinstance(m, ResBlock) for m in modules) == 2 * 5 * 3
assert sum(isinstance(m, torch.nn.MaxPool2d) for m in modules) == 5
assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in modules) == 5
assert isinstance(autoencoder.decoder.layers[-1], torch.nn.Sigmoid)
assert len(norms) == len(convs) - 1 and all(n.num_groups == 1 for n in norms)
assert autoencoder.encode(patch).shape == (1, 128)  # the bottleneck
print(
    f"{len(convs)} convolutions, {len(norms)} layer norms, "
    f"{sum(p.numel() for p in autoencoder.parameters()):,} parameters"
)

# %% [markdown]
# ## 8.3 The patch classifier
#
# §8 reuses the auto-encoder's encoder and appends one dense layer from the latent code to the 10 digit
# scores. The table confirms it: the same encoder, then `Linear 128->10`.

# %%
classifier = PatchClassifier(
    channels=full.in_channels, num_classes=full.num_classes, base_width=full.task_width
)
print(layer_table(classifier, patch, max_depth=3))

# %%
encoder_params = sum(p.numel() for p in classifier.encoder.parameters())
assert encoder_params == sum(p.numel() for p in autoencoder.encoder.parameters())
assert str(classifier.encoder) == str(autoencoder.encoder)  # the same layers, layer by layer
assert sum(p.numel() for p in classifier.parameters()) == encoder_params + 128 * 10 + 10

# %% [markdown]
# ## 8.4 Every model of the tables
#
# The baselines reuse these parts: the grid has no heatmap network at all; the channel-wise model keeps the
# heatmap trunk but ends in K channels (one per keypoint) and runs at a single scale; the naive model *is*
# MIST, trained differently. Parameter counts of the twelve models, as their recipes build them at each
# budget:

# %%
print(f"{'model':36} {'budget':6} {'heatmap':>9} {'task':>10}")
for task, data, method in PAPER:
    for budget in ("gpu", "cpu"):
        model = build_model(recipe(task, data, method, budget=budget))
        h = sum(p.numel() for p in model.heatmap_net.parameters()) if hasattr(model, "heatmap_net") else 0
        t = sum(p.numel() for p in model.task_net.parameters())
        print(f"{task}-{data}-{method:36}"[:36], f"{budget:6} {h:>9,} {t:>10,}")

# %% [markdown]
# ## 8.5 Hyper-parameters
#
# Each row of Tables 1–2 is an `Experiment` built by `mistlib.experiments.recipe(task, data, method,
# budget)`. The `gpu` budget is the full recipe; the `cpu` budget is what one core of a 2-core CPU trains
# in well under an hour per row (the estimate of §8.6 and the wall times recorded below), and is what the
# shipped checkpoints used wherever chapter 7's tables say `cpu`. The lifting trainer of Algorithm 1 (MIST
# rows), its two budgets side by side, `*` marking what differs:

# %%
gpu_recipe = recipe("reconstruct", "mnist-hard", "mist", budget="gpu")
cpu_recipe = recipe("reconstruct", "mnist-hard", "mist", budget="cpu")
print(config_table(gpu=gpu_recipe.trainer_config(), cpu=cpu_recipe.trainer_config()))

# %% [markdown]
# The model configurations differ in the networks' sizes (the heatmap network's depth and the reference
# size it runs at, the compact task network) and in choices the CPU recipe measured in appendix chapter 9:
# the code of the auto-encoder, the suppression window of $\mathcal{E}_K$ and, on MNIST hard, the scales:

# %%
print(config_table(gpu=gpu_recipe.model, cpu=cpu_recipe.model))

# %% [markdown]
# The baselines (grid, channel-wise, naive top-K) train end to end with plain back-propagation
# (`EndToEndConfig`); the Gabor rows use K = 25 and a scale space around the wavelet's size; the CPU
# budget of the Gabor MIST row spends fewer steps because one of its steps costs more (25 patches per
# image). The settings that differ between rows:

# %%
print(f"{'row':34} {'budget':6} {'steps':>6} {'warm-up':>8} {'batch':>6} {'K':>3}  scales")
for task, data, method in PAPER:
    for budget in ("gpu", "cpu"):
        e = recipe(task, data, method, budget=budget)
        c = e.trainer_config()
        warmup = getattr(c, "warmup_steps", 0)
        sizes = f"{c.steps:>6} {warmup:>8} {c.batch_size:>6} {e.model.k:>3}"
        print(f"{e.name:34} {budget:6} {sizes}  {e.model.scales}")

# %% [markdown]
# ## 8.6 Compute cost
#
# **FLOPs per image.** PyTorch's `FlopCounterMode` counts the floating-point operations of convolutions and
# matrix products (2 per multiply-add) during one forward pass; element-wise work (norms, ReLU, the local
# softmax, resizing, the bilinear sampler) is not counted, so these are lower bounds dominated by what
# matters. They depend only on the shapes, so they are the same on every machine.

# %%
mist_full, mist_slim = build_model(gpu_recipe), build_model(cpu_recipe)
flops = {
    "heatmap network, default (32 ch, 4 blocks)": count_flops(mist_full.heatmap_net, image),
    "heatmap network, CPU budget (32 ch, 2 blocks)": count_flops(mist_slim.heatmap_net, image),
    "auto-encoder, one patch": count_flops(mist_full.task_net, patch),
    "classifier, one patch": count_flops(classifier, patch),
    "MIST forward, default, K = 9": count_flops(mist_full, image),
    "MIST forward, CPU budget, K = 9": count_flops(mist_slim, image),
}
for name, value in flops.items():
    print(f"{name:47} {value / 1e9:7.3f} GFLOPs")

# %% [markdown]
# The same numbers as bars: at the default width the heatmap network dominates a forward pass, which is
# why the CPU budget slims it first. Training multiplies these (a backward pass costs about twice a
# forward one, and stage 2 of lifting runs the task network `refine_iterations` more times).

# %%
show_compute({name: value for name, value in flops.items() if "one patch" not in name})

# %% [markdown]
# Two checks on where the compute goes. A whole forward pass is the heatmap network plus K patch
# auto-encodings, nothing else that the counter sees. And the heatmap network costs the same per pixel at
# every scale, so its total is (cost per pixel) x (pixels summed over the three resized images): the
# larger scales are cheap, the smallest one (the image enlarged to 100 x 100) is the most expensive.

# %%
k = gpu_recipe.model.k
assert flops["MIST forward, default, K = 9"] == (
    flops["heatmap network, default (32 ch, 4 blocks)"] + k * flops["auto-encoder, one patch"]
)
f, n = full.heatmap_channels, full.heatmap_blocks
per_pixel = 2 * (9 * 1 * f + n * 2 * 9 * f * f + f)  # stem, blocks, head: 2 FLOPs per multiply-add
sides = [max(1, round(80 * full.reference_size / s)) for s in full.scales]
assert flops["heatmap network, default (32 ch, 4 blocks)"] == per_pixel * sum(side * side for side in sides)
print("resized image sides:", sides, " FLOPs per pixel of the trunk:", per_pixel)

# %% [markdown]
# **Time per step on this CPU.** A training step of Algorithm 1 runs stage 1 (update $\tau$), stage 2
# (refine the keypoints: `refine_iterations` forward and backward passes of the task network) and stage 3
# (regress the heatmap); during the warm-up only stage 1 runs, on random windows or (`warmup_windows`:
# every MIST reconstruction recipe and the cpu classification one) on the heatmap's picks, and so it does
# during the polish at the end of a recipe that has one (`polish_steps`: MIST on MNIST easy). The cell
# times one step of each kind on one thread (the fastest of three, since other work on the machine only
# adds time), and extrapolates to a whole recipe.
# The GPU recipe is timed on a batch of 8 instead of 32 to keep this chapter quick (a step's time grows
# about linearly with the batch on a CPU). Your numbers will differ, and so will this cell's output from run
# to run, which is why it is not regression-tested.

# %%
# NBVAL_IGNORE_OUTPUT
images = MNISTHard(split="test", size=16, seed=1).images  # (16, 1, 80, 80)
torch.set_num_threads(1)


def time_steps(experiment, batch_size: int) -> dict[str, float]:
    """Seconds for one warm-up step, one lifting step (stages 1-3) and one forward pass: the fastest of 3."""
    experiment = dataclasses.replace(experiment, train={**experiment.train, "device": device})
    trainer = build_trainer(experiment, build_model(experiment))
    batch = images[:batch_size]
    timings = {}
    for stage, step in (("warm-up", 0), ("lifting", trainer.config.warmup_steps)):
        timings[stage] = float("inf")
        for _ in range(3):
            trainer.step = step  # the step counter decides between the warm-up and the three stages
            started = time.perf_counter()
            trainer.train_step(batch, None)
            timings[stage] = min(timings[stage], time.perf_counter() - started)
    timings["forward"] = float("inf")
    for _ in range(3):
        with torch.no_grad():
            started = time.perf_counter()
            trainer.model(batch)
            timings["forward"] = min(timings["forward"], time.perf_counter() - started)
    return timings


for budget, experiment, batch_size in (("cpu", cpu_recipe, 16), ("gpu", gpu_recipe, 8)):
    timings = time_steps(experiment, batch_size)
    c = experiment.trainer_config()
    scale = c.batch_size / batch_size
    stage1_only = c.warmup_steps + c.polish_steps  # steps that cost a warm-up step
    total = scale * (stage1_only * timings["warm-up"] + (c.steps - stage1_only) * timings["lifting"])
    steps = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items())
    print(f"{budget} recipe, batch {batch_size}: {steps}")
    print(f"   whole recipe ({c.steps} steps of batch {c.batch_size}) ~ {total / 60:.0f} min on this CPU")

# %% [markdown]
# **What the shipped checkpoints cost.** Each checkpoint records how it was made; the table is read from
# the files in `checkpoint_dir()`, so it describes whatever checkpoints this book was built with. Several
# rows trained at once on the two cores, so a recorded wall time is up to about twice what the row takes
# alone.

# %%
print(f"{'checkpoint':36} {'steps':>6} {'device':>8} {'wall time':>10}  command")
for task, data, method in PAPER:
    name = f"{task}-{data}-{method}"
    if not (checkpoint_dir() / f"{name}.pt").exists():
        print(f"{name:36} (missing)")
        continue
    _, _, meta = pretrained(name, device=device)
    command = meta.get("command", "?").replace(str(checkpoint_dir()), "<checkpoints>")
    print(
        f"{name:36} {meta.get('steps', 0):>6} {meta.get('device_name', '?'):>8} "
        f"{meta.get('wall_time_s', 0):>8.0f} s  {command}"
    )

# %% [markdown]
# ## 8.7 Retraining every result
#
# Everything in the book can be rebuilt from the command line (`python -m mistlib --help` lists the
# commands; run them from the repository root):
#
# | what | command |
# |---|---|
# | one checkpoint | `python -m mistlib train --task reconstruct --data mnist-hard --method mist` |
# | ... at the CPU budget | add `--budget cpu` (default: `--budget gpu`, the full recipe) |
# | ... with the lifting log of chapter 6 | add `--log data/checkpoints/reconstruct-mnist-hard-mist.log.pt` |
# | ... continuing a killed run | add `--resume` (it restarts from `<out>.resume`, written every 500 steps) |
# | evaluate a checkpoint | `python -m mistlib evaluate data/checkpoints/reconstruct-gabor-mist.pt` |
# | all of Table 1, retrained | `python -m mistlib reproduce table1 --retrain` |
# | all of Table 2, retrained | `python -m mistlib reproduce table2 --retrain` |
# | a table from the checkpoints present | `python -m mistlib reproduce table1` (trains only missing rows) |
#
# `train` picks CUDA when it is available (`--device cpu|cuda` forces one); `--steps`, `--batch-size`,
# `--train-size` and `--seed` override the recipe. `reproduce` writes `results/<table>.md` and
# `results/<table>.json`, which chapter 7 reads. The next cell builds the `train` command of every
# checkpoint and checks that the command-line parser accepts it, so the table above cannot go stale
# silently.

# %%
parser = build_parser()
for task, data, method in PAPER:
    command = f"train --task {task} --data {data} --method {method} --budget gpu"
    args = parser.parse_args(shlex.split(command))
    assert (args.task, args.data, args.method, args.budget) == (task, data, method, "gpu")
    print("python -m mistlib", command)
for extra in (
    "reproduce table1 --retrain",
    "reproduce table2 --retrain --budget cpu",
    "train --resume --budget cpu --log run.log.pt",
    "evaluate some.pt --size 1000",
):
    parser.parse_args(shlex.split(extra))

# %% [markdown]
# ## Summary
#
# - The heatmap network is a full-resolution ResNet (3 x 3 stem, ResNet blocks, 1 x 1 head) run once per
#   scale on a resized image; the CPU recipe uses a slim version of it (16 channels, 2 blocks; 32 channels
#   on MNIST hard and for MIST on MNIST easy).
# - The patch auto-encoder follows §8 — five levels of three ResNet blocks, max-pooling down, transposed
#   convolutions up, layer norms, a sigmoid output — with choices the paper leaves open made explicit: base
#   width 8, 1 x 1 convolutions to double the channels, no skips, no norm on the raw input.
# - The classifier is the same encoder plus one dense layer.
# - `recipe(task, data, method, budget)` holds every hyper-parameter; the `gpu` and `cpu` budgets differ in
#   steps, batch size, warm-up, refinement and the heatmap network's size.
# - FLOPs are counted deterministically: the heatmap network dominates, and its smallest scale (the
#   enlarged image) costs the most.
# - `python -m mistlib reproduce table1 --retrain` (and `table2`) retrains a whole table; `train` with
#   `--budget`, `--resume` and `--log` retrains one checkpoint.

# %% [markdown]
# ## Exercises
#
# 1. Using the formula of §8.1, how many parameters would a heatmap network of 64 channels and 8 blocks
#    have? Check your answer with `HeatmapNet`.
#
# <details><summary>Solution</summary>
#
# $9 \cdot 64 + 64 + 8 \cdot 2\,(9 \cdot 64^2 + 64) + 65 = 640 + 590{,}848 + 65 = 591{,}553$:
#
# ```python
# from mistlib.heatmap import HeatmapConfig
# sum(p.numel() for p in HeatmapNet(HeatmapConfig(channels=64, num_blocks=8)).parameters())  # 591553
# ```
# </details>
#
# 2. Adding a fourth, smaller scale of 12 px to the scale space of MNIST hard: by what factor does the
#    heatmap network's FLOP count grow? Predict it from the per-pixel argument of §8.6, then measure it
#    with `count_flops`.
#
# <details><summary>Solution</summary>
#
# A 12 px scale resizes the 80 px image by 20 / 12, to 133 x 133 pixels. The pixels summed over the
# scales go from $100^2 + 80^2 + 64^2 = 20{,}496$ to $20{,}496 + 133^2 = 38{,}185$: a factor of about
# 1.86. Measure it:
#
# ```python
# wider = dataclasses.replace(full, scales=(12.0, 16.0, 20.0, 25.0))
# count_flops(HeatmapNet(wider.heatmap_config()), image) / count_flops(heatmap, image)  # 1.863...
# ```
# </details>
#
# 3. From the timing cell, estimate how long the *GPU* recipe of one MIST row would take on your CPU, and
#    which two settings of `recipe(..., budget="cpu")` buy most of the difference.
#
# <details><summary>Solution</summary>
#
# The timing cell prints the estimate: the `gpu` line's step times, scaled from batch 8 to the recipe's
# batch, times its warm-up and lifting steps (the hyper-parameter table of §8.5) — many hours on a
# 2-core machine. Most of the saving of the CPU budget comes from the compact networks (compare the two
# "MIST forward" lines of §8.6: the heatmap network runs at 0.4 × the resolution and the task network is
# strided), the rest from half the steps; the batch is the same.
# </details>
