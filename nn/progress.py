"""What ``fit`` shows while it trains, ``verbose`` in the Keras sense.

    0        nothing
    1        a progress bar (steps, the loss, each epoch's metrics): a widget in a notebook
             with ipywidgets, else tqdm's text bar on stderr
    2        one line per epoch (epoch, metrics, seconds): for logs and CI
    "auto"   (the default) 1 on a terminal (stderr is a tty) or in a notebook with
             ipywidgets, else 2; a log gets about 80 bytes an epoch, not bar refreshes

The lines go to stderr, as the bar does (stdout stays for results), except in a notebook
kernel, where they go to stdout so that they do not show as error output.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Any, TextIO

import numpy as np

from handgrad.engine.plain import plain_repr

SILENT, BAR, LINES = 0, 1, 2
CHOICES = (SILENT, BAR, LINES, "auto")
SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")   # in the bar and lines


def resolve_verbose(verbose: Any, progress: bool | None = None) -> int:
    """0, 1 or 2 from ``verbose`` (0, 1, 2 or "auto") and the older ``progress`` flag:
    ``progress=False`` is ``verbose=0``, ``progress=True`` is ``verbose="auto"``. Giving
    both with different meanings is an error."""
    if isinstance(verbose, np.integer):
        verbose = int(verbose)                  # np.int64(1) is 1
    if not (isinstance(verbose, str) and verbose == "auto") and not (
            isinstance(verbose, int) and not isinstance(verbose, bool) and verbose in (0, 1, 2)):
        raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {plain_repr(verbose)}")
    if progress is not None:
        if not isinstance(progress, (bool, np.bool_)):
            raise ValueError(f"fit: progress must be True or False, got {plain_repr(progress)}")
        progress = bool(progress)
        wanted = "auto" if progress else SILENT
        if verbose != "auto" and verbose != wanted and not (progress and verbose):
            raise ValueError(f"fit: progress={progress} contradicts verbose={plain_repr(verbose)}; "
                             f"pass verbose alone")
        if verbose == "auto":
            verbose = wanted
    if verbose == "auto":
        return BAR if _stderr_is_a_terminal() or in_notebook_with_widgets() else LINES
    return int(verbose)


def _stderr_is_a_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):          # replaced by an object without isatty, closed
        return False


def in_notebook() -> bool:
    """Running in a Jupyter (ipykernel) kernel: IPython is loaded and its shell is a kernel's."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def in_notebook_with_widgets() -> bool:
    """In a notebook kernel with ipywidgets installed (tqdm's widget bar needs it)."""
    return in_notebook() and importlib.util.find_spec("ipywidgets") is not None


def format_epoch(record: dict[str, float], epochs: int) -> str:
    """One line for an epoch's record: ``epoch 3/300  train_loss 0.1234  ...  0.01 s``."""
    width = len(str(epochs))
    cells = [f"epoch {int(record['epoch']):>{width}}/{epochs}"]
    cells += [f"{k} {record[k]:.4f}" for k in SHOWN if k in record]
    cells.append(f"{record['seconds']:.2f} s")
    return "  ".join(cells)


class Progress:
    """The display of one ``fit`` call; ``step`` after every step, ``epoch`` after every
    epoch, ``close`` at the end (also after an error)."""

    def __init__(self, verbose: int, total_steps: int, epochs: int, stream: TextIO | None = None):
        self.verbose, self.epochs = verbose, epochs
        self.stream = stream
        self.bar: Any = None
        if verbose == BAR:
            self.bar = _bar(total_steps)

    def _out(self) -> TextIO:
        if self.stream is not None:
            return self.stream
        return sys.stdout if in_notebook() else sys.stderr

    def step(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", refresh=False)

    def epoch(self, record: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k in SHOWN})
        elif self.verbose == LINES:
            out = self._out()
            print(format_epoch(record, self.epochs), file=out)
            out.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar(total: int) -> Any:
    """tqdm's widget bar in a notebook with ipywidgets, its text bar elsewhere (never
    tqdm.auto, which warns "IProgress not found" in a notebook without ipywidgets)."""
    if in_notebook_with_widgets():
        from tqdm.notebook import tqdm
        return tqdm(total=total, unit="step", leave=False)
    from tqdm import tqdm as text_bar
    return text_bar(total=total, unit="step", leave=False, dynamic_ncols=True)
