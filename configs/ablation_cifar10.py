"""Base config of the positional-embedding ablation on CIFAR-10 (docs/ablation.md): a small ViT at 32×32.

  python scripts/ablate.py --config=configs/ablation_cifar10.py \
      --config.dataset=folder:/work/shared/data/cifar10-jpg.tar.gz \
      --sweep=model.posemb=none,learn,sincos1d,sincos2d,learn2d,rel,relbias2d,rope2d,rope_mixed \
      --seeds=3 --eval_sizes=24,40,48 --workdir=docs/ablation/v2 --lock=/tmp/vit_cpu.lock

Patch 4 (8×8 = 64 tokens), width 128, depth 4, 4 heads (head_dim 32, as the rotary schemes need a
multiple of 4), GAP pooling and no CLS token, so "none" sees the patches as an unordered set.
900 steps of 128 images (2.3 epochs; the first sweep's 300 steps, 0.77 epochs, ended before the
learned tables had learned) at 360-480 images/s: 5-8 minutes per run with its evaluations on 2 idle
CPU cores, about 3 hours for 27 runs (measured: result.json "seconds"). The sweep directory is in
the repository (docs/ablation/v2): each run's result.json, config.json and metrics.jsonl are
committed as the run finishes, so a sweep stopped on one machine continues on another without
repeating a finished run. Every resolution is evaluated on
the same class-balanced half of the test split; few-shot and k-NN use a class-balanced fifth of train.
"""

from vit_jax.config import load_config


def get_config():
    c = load_config("cifar10.py", relative_to=__file__)
    c.eval_split = "test[:5000]"  # class-balanced: folder splits are stratified
    c.aug.crop_area_min = 0.35
    c.model.depth = 4
    c.model.gelu_approximate = False
    c.lr = 2e-3
    c.label_smoothing = 0.1
    c.total_steps = 900
    c.warmup_steps = 60
    c.log_every = 25
    c.eval_every = 0  # only the final eval (the ablation then evaluates the other sizes)
    # The final evaluators: top-1 (the default evaluator, named), and the ViT paper's metric of the
    # frozen representation, few-shot linear accuracy, with k-NN; their reference examples come from
    # a class-balanced fifth of train. They are columns of the sweep's table.
    c.evals.eval = dict(type="classification")
    c.evals.fewshot = dict(type="fewshot", train_split="train[:20%]", shots=(1, 5, 10, 25))
    c.evals.knn = dict(type="knn", train_split="train[:20%]")
    c.checkpoint_every = 150
    c.keep_checkpoints = 1
    c.progress_bar = False
    return c
