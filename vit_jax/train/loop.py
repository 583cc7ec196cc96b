"""The training loop: config → data → model/state → jitted steps → eval, logs, checkpoints.

Read top to bottom; each section is small and the jitted maths lives in `step.py`. A library
function: the command line (`vit_jax/main.py`) sets the process up (malloc, CPU devices,
`jax.distributed`, kernel choice) before calling `train_and_evaluate`.
"""

import functools
import signal
import sys
from typing import Dict, Optional, Tuple

import jax
import numpy as np

from vit_jax import evaluators, models
from vit_jax.common import distributed, files
from vit_jax.common.errors import Error
from vit_jax.common.profiling import StepProfiler
from vit_jax.config import ConfigError, validate
from vit_jax.train import distill, preflight, workdir_lock
from vit_jax.train import sharding as shd
from vit_jax.train import step as ts
from vit_jax.train.checkpoint import Checkpointer, check_config, saved_steps, write_config
from vit_jax.train.metrics_log import MetricsLogger
from vit_jax.train.optim import ema_of, make_optimizer, make_schedule


class NonFiniteError(Error, RuntimeError):
    """The loss or gradient became NaN/Inf (with `nan_policy='stop'`)."""


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (then saves and exits)."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def _handle(self, signum, frame):
        self.signal = signum

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def build(config, num_classes: int, mesh):
    """Model, optimizer, schedule, abstract state and its shardings."""
    model = models.from_config(config.model, num_classes, config.model_name)
    schedule = make_schedule(config)
    frames = (model.num_frames,) if config.model_name == "vivit" else ()  # clips [B, T, H, W, C]
    image_shape = (1, *frames, config.image_size, config.image_size, 3)
    params_shape = jax.eval_shape(
        model.init, jax.random.PRNGKey(0), np.zeros(image_shape, np.float32)
    )
    tx = make_optimizer(config, params_shape["params"])
    init = functools.partial(ts.init_state, model, tx, image_shape, config.seed)
    abstract = jax.eval_shape(init)
    shardings = shd.tree_shardings(abstract, mesh)
    return model, tx, schedule, init, abstract, shardings


def eval_variables(state, weights: str = "params"):
    """The model variables an evaluator scores: the trained params, or their EMA (`ema_decay`)."""
    params = state["params"] if weights == "params" else ema_of(state["opt_state"])
    if params is None:
        raise ConfigError("an evaluator has weights='ema' but the run keeps no EMA; set ema_decay")
    variables = {"params": params}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    return variables


def run_evaluators(evals, context, state, step: int, final: bool, logger=None):
    """Runs the evaluators due at `step`; returns {name: metrics} of those that ran."""
    out = {}
    context.new_round()
    for ev in evals:
        if ev.due(step, final):
            out[ev.name] = ev.run(context, eval_variables(state, ev.weights))
            if logger is not None:
                logger.eval(step, ev.name, out[ev.name])
    context.new_round()  # frees the representations
    return out


def best_metric(config) -> Tuple[str, str]:
    """(evaluator name, metric) that chooses the best checkpoint: `config.best_metric`
    ("NAME/METRIC"), by default the first evaluator's first metric (top-1 of classification)."""
    if config.best_metric:
        name, _, metric = config.best_metric.partition("/")
        return name, metric
    name, metrics = next(iter(evaluators.metrics_of(config).items()))
    return name, metrics[0]


def _due(step: int, every: int) -> bool:
    """Periodic logging, eval or checkpoint at `step`; every=0 means only at the end."""
    return every > 0 and step % every == 0


# nan_policy=skip: this many skipped updates in a row stop the run (a transient spike skips one or
# two; a diverged run skips every step and would otherwise finish with the weights of its last good
# step and a NaN eval). As MaxText's and Levanter's limits on consecutive bad steps.
MAX_SKIPS_IN_A_ROW = 5


class FiniteCheck:
    """Acts on each step's `finite` metric once: `stop` raises at the first non-finite step; `skip`
    prints a `warning:` per skipped update and raises after MAX_SKIPS_IN_A_ROW in a row."""

    def __init__(self, policy: str, say=print):
        self.policy, self.say = policy, say
        self.checked, self.skipped = 0, []  # last step checked; the current run of skipped steps

    def __call__(self, metrics, step: int, last_saved: Optional[int]) -> None:
        if step <= self.checked:
            return
        self.checked = step
        if bool(metrics["finite"]):
            self.skipped = []
            return
        what = "loss or gradient"
        if np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"])):
            what = "weights after the update (loss and gradient finite)"
        if self.policy == "stop":
            raise NonFiniteError(
                f"non-finite {what} at step {step}; stopping (last good checkpoint: step "
                f"{last_saved}). Lower the learning rate, or set --config.nan_policy=skip"
            )
        self.skipped.append(step)
        n = len(self.skipped)
        self.say(f"warning: step {step}: non-finite {what}; update skipped ({n} in a row)")
        if n >= MAX_SKIPS_IN_A_ROW:
            raise NonFiniteError(
                f"nan_policy=skip skipped {n} updates in a row (steps {self.skipped[0]}-{step}): the "
                f"weights have not changed since step {self.skipped[0] - 1} (last checkpoint: step "
                f"{last_saved}); lower the learning rate and rerun with "
                "--config.allow_config_change=True"
            )


def _init_from_pretrained(config, model, tx, state, shardings):
    """Replaces fresh params with a pretrained checkpoint's (new head, resized posemb)."""
    from vit_jax.weights import finetune  # noqa: PLC0415

    params = finetune.load_pretrained(
        config.init_from.path, model, (config.image_size, config.image_size),
        fmt=config.init_from.format, skip_head=config.init_from.skip_head,
        method=config.init_from.posemb_resize, seed=config.seed,
        gelu_check=config.init_from.gelu_check,
        inflate_how=config.init_from.get("inflate", "repeat"),
    )  # fmt: skip
    state["params"] = jax.device_put(params, shardings["params"])
    state["opt_state"] = jax.jit(tx.init, out_shardings=shardings["opt_state"])(state["params"])
    return state


def check_splits(config, data):
    """(number of classes, evaluators, the train split's DatasetInfo), after checking the train
    split and every evaluator's data up front: the splits exist, hold examples, and have labels
    the model can output (a head narrower than the dataset trains to nonsense)."""
    info = data.get_info(config.dataset, config.train_split, config.data_dir)
    if info.num_examples == 0:
        raise data.DataError(
            f"config.train_split={config.train_split!r} of {config.dataset} holds no examples; "
            "widen the split slice"
        )
    if info.multi_label:
        raise data.DataError(
            f"config.label_key={config.label_key!r} of {config.dataset} is a set of labels; "
            "training reads one label per example (sets are for multilabel evaluators)"
        )
    num_classes = config.num_classes or info.num_classes
    if info.num_classes > num_classes:
        raise ConfigError(
            f"config.num_classes={num_classes} is smaller than the {info.num_classes} classes "
            f"of config.train_split={config.train_split!r}; leave num_classes=None to take the "
            "dataset's"
        )
    evals = evaluators.from_config(config)
    for ev in evals:
        ev.check(num_classes)
    return num_classes, evals, info


def train_and_evaluate(config, workdir: str, stop_at: Optional[int] = None) -> Dict[str, float]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final eval metrics.

    `stop_at` ends the run after that step with a checkpoint, as a preemption would (for tests and
    for splitting a long run into jobs). Process 0 holds the workdir's lock meanwhile: a second
    run on the same workdir fails with one line (`vit_jax.train.workdir_lock`).
    A timm/transformers `init_from.path` first sets the model and preprocessing it needs
    (`vit_jax.config.from_checkpoint`).
    """
    from vit_jax.config import from_checkpoint  # noqa: PLC0415

    from_checkpoint.apply_to_training(config)
    validate(config)
    if jax.process_index() == 0:
        preflight.check_writable(workdir)  # one line for a read-only workdir, before anything
    with workdir_lock.held(workdir, main=jax.process_index() == 0):
        return _train(config, workdir, stop_at)


def _train(config, workdir: str, stop_at: Optional[int]) -> Dict[str, float]:
    # ----------------------------------------------------------------- config and devices
    mesh = shd.make_mesh(config.mesh.data, config.mesh.fsdp)

    # ----------------------------------------------------------------- data
    from vit_jax import data  # noqa: PLC0415  (TensorFlow only where data is read)

    num_classes, evals, info = check_splits(config, data)  # fails now, not after training

    # ----------------------------------------------------------------- model and state
    model, tx, schedule, init, abstract, shardings = build(config, num_classes, mesh)
    teacher = None  # config.distill: a frozen teacher, loaded (and checked) before anything runs
    if config.distill.kind != "none":
        teacher = distill.load_teacher(config, num_classes, mesh)
    config_changed = check_config(workdir, config)
    best_name, best_key = best_metric(config)
    ckpt = Checkpointer(
        workdir, config.keep_checkpoints, config.async_checkpointing,
        best=best_key if config.keep_best else None,
    )  # fmt: skip
    last_saved = ckpt.latest_step()
    facts = preflight.facts(config, info)  # a changed dataset is named, not a head mismatch
    facts_changed = preflight.check_dataset(
        workdir, facts, last_saved is not None, config.allow_config_change
    )
    existing = len(saved_steps(files.join(workdir, "checkpoints")))
    warn = functools.partial(print, file=sys.stderr, flush=True)
    preflight.warn_free_space(workdir, abstract, config.keep_checkpoints, existing, say=warn)
    if last_saved is not None:
        # Auto-resume: params, optimizer, step and RNG; the data position follows from the step.
        with_shardings = shd.with_shardings(abstract, shardings)
        state = ckpt.restore(with_shardings, last_saved)
    else:
        state = jax.jit(init, out_shardings=shardings)()
        if config.init_from.path:
            state = _init_from_pretrained(config, model, tx, state, shardings)
    if config_changed:  # only now: a resume that failed must not overwrite the run's record
        write_config(workdir, config)
    if facts_changed:
        preflight.write_facts(workdir, facts)
    start = int(jax.device_get(state["step"]))

    # ----------------------------------------------------------------- jitted steps
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step_fn = ts.jit_train_step(config, model, tx, schedule, shardings, mesh)
    if teacher is not None:  # the teacher's logits in the same jitted step
        step_fn = distill.jit_train_step(config, model, tx, schedule, shardings, mesh, teacher)
    put = functools.partial(shd.to_global, mesh=mesh)
    context = evaluators.Context(model, put, replicated, config.loss)

    # ----------------------------------------------------------------- loop
    logger = MetricsLogger(workdir, config.total_steps, start, config.progress_bar)
    if start:
        logger.print(f"resumed from step {start} in {workdir}")
    guard = PreemptionGuard()
    check = FiniteCheck(config.nan_policy, logger.print)
    # A trace of profile_steps steps after this start's first (which compiles), process 0 only.
    profile_dir = files.join(workdir, "tb") if jax.process_index() == 0 else None
    profiler = StepProfiler(profile_dir, config.profile_steps, start + 2, say=logger.print)
    batches = data.train_iterator(config, start_step=start)
    result: Dict[str, Dict[str, float]] = {}
    prev = None
    try:
        if start >= config.total_steps:  # finished (e.g. its final eval failed): evaluate again
            result = run_evaluators(evals, context, state, start, True, logger)
        for step in range(start + 1, config.total_steps + 1):
            distributed.note_progress(step, files.join(workdir, "checkpoints"))
            state, metrics = profiler(
                step, lambda s: step_fn(s, shd.to_global(next(batches), mesh)), state
            )
            if prev is not None:  # checked one step late, so the host never stalls the device
                check(prev, step - 1, last_saved)
            prev = metrics
            final = step == config.total_steps
            if _due(step, config.log_every) or final:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m["images_per_sec"] = logger.images_per_second(step, config.batch_size)
                logger.train(step, m)
            stopping = guard.signal is not None or step == stop_at
            # Saved before evaluating, so an evaluation that fails loses no training.
            if _due(step, config.checkpoint_every) or final or stopping:
                check(metrics, step, last_saved)
                ckpt.save(step, state, force=True)
                last_saved = step
            if any(ev.due(step, final) for ev in evals):
                check(metrics, step, last_saved)
                ran = run_evaluators(evals, context, state, step, final, logger)
                result.update(ran)
                if best_name in ran and config.keep_best:
                    ckpt.save_best(step, state, ran[best_name][best_key])
            if stopping:
                why = "stop_at" if guard.signal is None else signal.Signals(guard.signal).name
                logger.print(
                    f"{why}: saved checkpoint at step {step}; rerun the same command to resume"
                )
                return {"stopped_at": step}
    except Exception as e:  # a lost process (multi-host): one line, exit now (common/distributed)
        if distributed.is_peer_failure(e):
            distributed.exit_peer_lost(str(e))
        raise
    finally:
        guard.restore()
        profiler.close()
        ckpt.close()
        logger.close()
    return summary(result, evals)


def summary(result: Dict[str, Dict[str, float]], evals) -> Dict[str, float]:
    """The first evaluator's final metrics, plus every evaluator's as "NAME/METRIC"."""
    first = dict(result.get(evals[0].name, {})) if evals else {}
    for name, metrics in result.items():
        first.update({f"{name}/{k}": v for k, v in metrics.items()})
    return first
