"""What several subcommands share: the ranges of their numeric options, the size limit of a
built-in MLP, the check that a model accepts an --input-shape, the CPU thread count and the
progress bar."""
from __future__ import annotations

from ..discover import one_line
from .options import MAX_SEED, CLIError, check_size, int_range

# ranges of the numeric options (checked by argparse, before anything runs)
DEPTH = int_range(1, 1000)
WIDTH = int_range(1, 8192)
SEEDS = int_range(1, 100)
STEPS = int_range(1, 10**6)
THREADS = int_range(1, 1024)
SEED = int_range(0, MAX_SEED)
BATCH = int_range(2, 65536)


def mlp_size(depth: int, width: int, batch: int, what: str) -> None:
    """A built-in MLP's weights and one batch of activations per layer must fit the limit."""
    check_size(depth * width * (width + 1) + 3 * depth * batch * width, what, "an MLP of")


def check_input(model, x, text: str) -> None:
    """Run one forward pass of ``model`` on ``x`` without gradients, so that an --input-shape
    the model does not accept is reported as one line."""
    import torch

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model: one line
        raise CLIError(f"--input-shape {text}: the forward pass of {type(model).__name__} fails "
                       f"with an input of shape {tuple(x.shape)}: {type(exc).__name__}: "
                       f"{one_line(exc, 200)}") from exc
    finally:
        model.train(was_training)


def set_threads(n: int) -> None:
    """Use ``n`` torch CPU threads (--threads)."""
    import torch

    if n < 1:
        raise CLIError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)


class progress_bar:
    """A rich progress bar over ``total`` training steps; yields progress(advance, label).
    Without rich (or total 0) it yields None."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
        except ImportError:  # pragma: no cover - rich is optional
            return None
        self.bar = Progress(TextColumn("{task.description:<28}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            transient=False)
        self.bar.__enter__()
        task = self.bar.add_task("training", total=self.total)

        def progress(advance: int, label: str) -> None:
            self.bar.update(task, advance=advance, description=label)

        return progress

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


