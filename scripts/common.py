"""What every command line shares: one argument vocabulary, logging, and one way to fail.

Vocabulary: ``--data-root DIR``, ``--n-patterns``, ``--lam``, ``--tol``, ``--max-iter``, ``--seed``,
``--device auto|cpu|cuda``, ``--mirror-tta`` / ``--no-mirror-tta``, ``--checkpoint FILE``,
``--out FILE`` (a file), ``--out-dir DIR`` (a folder of outputs), ``--metrics-out FILE`` (figures as
JSON).
"""
import argparse
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from convexgan.distributed import init_from_environment, is_distributed, shard_rows

log = logging.getLogger("convexgan.cli")


def parser(doc):
    """An argument parser whose help is the script's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def integers(text):
    """'32,64' -> [32, 64] (an argparse type)."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def add_device(parser):
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the GPU when torch sees one")


def device(name):
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no GPU: use --device cpu (or auto).")
    return name


def add_mirror_tta(parser):
    parser.add_argument("--mirror-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="score every test image with its mirror image too (default: on for cifar10, "
                             "whose classes a mirror keeps; off for digits and folders)")


def mirror_tta(args):
    """--mirror-tta, by default on for the natural images of cifar10 only."""
    return args.dataset == "cifar10" if args.mirror_tta is None else args.mirror_tta


@contextmanager
def process_group():
    """Join the process group that torchrun (or SLURM) describes in the environment, if any;
    yields ``(rank, world_size)``, ``(0, 1)`` for a plain run. Ranks other than 0 log warnings
    only; the group is left at the end."""
    rank, world = init_from_environment()
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield rank, world
    finally:
        if is_distributed():
            dist.destroy_process_group()


def this_rank_rows(array):
    """This rank's contiguous share of the rows of ``array`` (all of them in a plain run)."""
    rows = shard_rows(len(array))
    return array[rows.start:rows.stop]


def curves_axes():
    """A figure and axes for curves against steps, drawn off-screen (matplotlib's Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6.4, 4))


def save_figure(fig, ax, filename, legend_loc="best"):
    """Legend and grid, then ``filename`` (PNG, its folder made); returns filename."""
    import matplotlib.pyplot as plt
    ax.legend(loc=legend_loc)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(filename).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(filename, dpi=120)
    plt.close(fig)
    return filename


def write_metrics(path, figures):
    """``figures`` as JSON at ``path`` (its folder created); nothing when path is None."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(figures, indent=2))


def run(parser, job, argv=None):
    """Parse ``argv`` (default: the command line), then ``job(args)``. Returns the exit status:
    0 when done (and for --help), 2 for a bad argument or bad input, whose message (what is wrong
    and what to do) goes to stderr. Other exceptions are bugs and keep their traceback."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed the help or what is wrong with the arguments
        return stop.code
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        job(args)
    except (ValueError, OSError, ImportError) as err:
        log.debug("failed", exc_info=True)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
