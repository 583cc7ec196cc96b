"""Run logging: a JSON-lines file, TensorBoard events, a console progress bar, a PNG of the curves.

The workdir may be a URL (gs://): metrics.jsonl and curves.png go through `vit_jax.common.files`,
TensorBoard's events through `tf.io.gfile` (which epath also uses for gs:// when TensorFlow is
installed). A scheme tf.io.gfile does not know gets no events, with one warning line.
"""

import json
import sys
import time
from typing import Dict

import jax

from vit_jax import evaluators
from vit_jax.common import files
from vit_jax.common.errors import first_line


def _tb_writer(logdir: str):
    """A tf.summary writer, or None where TensorFlow is absent (e.g. a GPU image without it)."""
    try:
        import tensorflow as tf  # noqa: PLC0415  (heavy, optional)
    except ImportError:
        return None
    tf.config.set_visible_devices([], "GPU")
    scheme = files.scheme(logdir)
    if scheme and scheme not in tf.io.gfile.get_registered_schemes():
        print(
            f"warning: no TensorBoard events in {logdir}: tf.io.gfile cannot write {scheme}:// "
            "(metrics.jsonl holds the same numbers)", file=sys.stderr, flush=True,
        )  # fmt: skip
        return None
    return tf.summary.create_file_writer(logdir)


class MetricsLogger:
    """Writes `workdir/metrics.jsonl`, `workdir/tb/` and, on close, `workdir/curves.png`.

    Only process 0 writes; the others only keep time.
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int, progress_bar: bool = True):
        self.workdir = workdir
        self.main = jax.process_index() == 0
        self.jsonl = files.join(workdir, "metrics.jsonl")
        if self.main:
            repair_tail(self.jsonl)
        self.tb = _tb_writer(files.join(workdir, "tb")) if self.main else None
        self.bar = None
        if self.main and progress_bar:
            from tqdm import tqdm  # noqa: PLC0415

            self.bar = tqdm(
                total=total_steps, initial=start_step, file=sys.stderr, dynamic_ncols=True
            )
        self._last = (time.perf_counter(), start_step)

    def _write(self, split: str, step: int, metrics: Dict[str, float]) -> None:
        if not self.main:
            return
        files.append_text(self.jsonl, json.dumps({"step": step, "split": split, **metrics}) + "\n")
        if self.tb is not None:
            import tensorflow as tf  # noqa: PLC0415

            with self.tb.as_default(step=step):
                for k, v in metrics.items():
                    tf.summary.scalar(f"{split}/{k}", v)

    def images_per_second(self, step: int, batch_size: int) -> float:
        now = time.perf_counter()
        t0, s0 = self._last
        self._last = (now, step)
        return batch_size * (step - s0) / max(now - t0, 1e-9)

    def train(self, step: int, metrics: Dict[str, float]) -> None:
        self._write("train", step, metrics)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(
                loss=f"{metrics['loss']:.4f}",
                acc=f"{metrics['accuracy']:.3f}",
                lr=f"{metrics['lr']:.2e}",
                img_s=f"{metrics.get('images_per_sec', 0):.0f}",
            )

    def eval(self, step: int, name: str, metrics: Dict[str, float]) -> None:
        """One evaluator's metrics: a metrics.jsonl row with split=name, NAME/* in TensorBoard, and a
        line such as `step 600: eval loss 0.1199  top-1 0.9694  top-5 1.0000  (360 examples)`."""
        self._write(name, step, metrics)
        self.print(evaluators.describe(step, name, metrics))

    def print(self, message: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.main:
            if self.tb is not None:
                self.tb.flush()
            png = files.join(self.workdir, "curves.png")
            try:  # a picture of the numbers must never fail a run (e.g. on a full disk)
                if files.exists(self.jsonl):
                    plot_curves(self.jsonl, png)
            except Exception as e:  # noqa: BLE001  (matplotlib, the file system: any failure)
                _warn(f"could not draw {png} ({first_line(e)}); {self.jsonl} holds the numbers")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def repair_tail(path: str) -> None:
    """Moves a cut last line of `path` (a run killed while writing it) to `PATH.cut`, with one
    `warning:` line, so the next row starts on a line of its own instead of being glued onto it."""
    if not files.exists(path):
        return
    text = files.read_text(path)
    if not text or text.endswith("\n"):
        return
    keep, cut = text[: text.rfind("\n") + 1], text[text.rfind("\n") + 1 :]
    files.append_text(f"{path}.cut", cut + "\n")
    files.write_text(path, keep)
    _warn(
        f"{path} ended in a cut row ({len(cut)} characters, a run stopped mid-write); moved it to "
        f"{path}.cut"
    )


def read_metrics(path: str):
    """Rows of a metrics.jsonl file; lines that are not a row (cut, glued, not JSON) are skipped
    with one `warning:` line naming the file and the first such line's number."""
    rows, bad = [], []
    for number, line in enumerate(files.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            bad.append((number, first_line(e)))
            continue
        if isinstance(row, dict) and "step" in row and "split" in row:
            rows.append(row)
        else:
            bad.append((number, "not a row with step and split"))
    if bad:
        _warn(f"skipped {len(bad)} unreadable line(s) of {path} (line {bad[0][0]}: {bad[0][1]})")
    return rows


def plot_curves(jsonl_path: str, png_path: str) -> None:
    """Training loss, train/eval accuracy and learning rate against step."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = read_metrics(jsonl_path)
    train = [r for r in rows if r["split"] == "train"]
    evals = {}  # every evaluator's rows, by name
    for r in rows:
        if r["split"] != "train":
            evals.setdefault(r["split"], []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    axes[1].plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train")
    for name, rs in evals.items():
        if all("loss" in r for r in rs):
            axes[0].plot([r["step"] for r in rs], [r["loss"] for r in rs], "o-", label=name)
        if all("top1" in r for r in rs):
            axes[1].plot(
                [r["step"] for r in rs], [r["top1"] for r in rs], "o-", label=f"{name} top-1"
            )
    axes[0].set_title("loss")
    axes[1].set_title("accuracy")
    axes[2].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    files.write_figure(fig, png_path, dpi=90)
    plt.close(fig)
