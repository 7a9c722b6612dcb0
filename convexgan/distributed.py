"""Rows sharded across processes with ``torch.distributed``: the process group, the shards, and
the few collectives the library's kernels need.

Launch with ``torchrun`` (and therefore SLURM or a Kubernetes PyTorchJob): each process calls
``init_from_environment()``, takes its rows with ``shard_rows`` and calls the usual functions on
them; sums over rows become one fused all-reduce (``all_reduce_sum``). Every rank then holds
the same reduced values, so every decision taken from them is the same on every rank.
A failure on one rank must not leave the others waiting in a collective until the timeout:
local work that can fail runs inside ``agree(...)``, which tells every rank who failed and why.
"""
import datetime
import os
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.distributed as dist


def is_distributed():
    """Whether a process group of more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size():
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment(backend=None, timeout_s=300):
    """Join the process group described by the environment, if any.

    torchrun and PyTorchJobs set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
    under SLURM (``srun``) ``SLURM_PROCID`` and ``SLURM_NTASKS`` stand for the first two (the
    address and port must still be exported, say from ``scontrol show hostnames``).

    Parameters
    ----------
    backend : {None, "gloo", "nccl"}
        None: NCCL when CUDA is available, else gloo.
    timeout_s : float
        How long a collective waits for the other ranks.

    Returns
    -------
    (rank, world_size) : tuple of int
        ``(0, 1)`` when the environment describes no group (a plain single process).
    """
    if dist.is_initialized():
        return rank_and_size()
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID"))
    world = os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS"))
    if rank is None or world is None or int(world) == 1:
        return 0, 1
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not set: launch with torchrun, or export the address and a free "
                         "port of the first node (under SLURM: scontrol show hostnames $SLURM_JOB_NODELIST | head -1).")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))))
    dist.init_process_group(backend, rank=int(rank), world_size=int(world),
                            timeout=datetime.timedelta(seconds=timeout_s))
    return rank_and_size()


def shard_rows(n, rank=None, world_size=None):
    """This rank's contiguous rows ``range(start, stop)`` of n: sizes differ by at most one, a
    shard may be empty, and no row is repeated (padding would change every sum)."""
    if rank is None or world_size is None:
        rank, world_size = rank_and_size()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes.")
    return range(n * rank // world_size, n * (rank + 1) // world_size)


_TRAFFIC = {"all_reduces": 0, "floats": 0}


def traffic(reset=False):
    """``{"all_reduces": calls, "floats": float64 values summed}`` of ``all_reduce_sum`` in this
    process since the last reset (what the solvers send per iteration; a ring all-reduce moves
    about 2 (p - 1) / p times each value in and out of every rank)."""
    counts = dict(_TRAFFIC)
    if reset:
        _TRAFFIC.update(all_reduces=0, floats=0)
    return counts


def all_reduce_sum(*tensors):
    """Sum each tensor over all ranks, in place, with one collective: the tensors are packed into
    one float64 buffer on the backend's device (so sums of float32 partials keep their precision,
    and CPU tensors reduce under NCCL) and unpacked after.
    Without a process group this does nothing. Returns the tensors."""
    if not is_distributed() or not tensors:
        return tensors
    device = _device()  # the backend's: NCCL reduces on the GPU, gloo on the CPU
    buffer = torch.cat([t.detach().reshape(-1).to(device=device, dtype=torch.float64) for t in tensors])
    dist.all_reduce(buffer)
    _TRAFFIC["all_reduces"] += 1
    _TRAFFIC["floats"] += buffer.numel()
    offset = 0
    for t in tensors:
        t.copy_(buffer[offset:offset + t.numel()].reshape(t.shape))
        offset += t.numel()
    return tensors


def gather_objects(value):
    """The list of every rank's ``value`` (small picklable metadata: shapes, labels), in rank
    order; ``[value]`` without a process group."""
    if not is_distributed():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def labels_of_all_ranks(labels):
    """The sorted distinct values of every rank's ``labels`` (a rank with none adds nothing, so
    the result keeps the labels' dtype); ``np.unique(labels)`` without a process group."""
    mine = np.unique(labels)
    return np.unique(np.concatenate([c for c in gather_objects(mine) if len(c)] or [mine]))


def total_rows(n_local, widths):
    """The rows of all ranks, checking that every rank has the same ``widths`` (a tuple: features,
    outputs): a rank with other widths would send collectives of other sizes. Raises ValueError
    on every rank alike (the check reads gathered values)."""
    shapes = gather_objects((int(n_local), tuple(widths)))
    if len({w for _, w in shapes}) > 1:
        raise ValueError(f"the ranks' rows have different widths (features, outputs): {[w for _, w in shapes]}; "
                         "every rank must pass the same columns (and, for a classifier, labels).")
    n_total = sum(n for n, _ in shapes)
    if n_total == 0:
        raise ValueError("every rank's shard is empty: pass the rows to fit on.")
    return n_total


class RowShard:
    """Where this rank's rows sit among the rows of all ranks (contiguous, in rank order), for
    code that runs the same on one process (``sharded=False``: all rows here) and on many.

    Attributes: ``start``, ``stop`` (this rank's rows ``range(start, stop)`` of all), ``total``,
    ``first`` (whether this process writes the files: rank 0, or any process when not sharded).
    """

    def __init__(self, n_local, sharded=True):
        self.sharded = bool(sharded) and is_distributed()
        counts = gather_objects(int(n_local)) if self.sharded else [int(n_local)]
        rank = dist.get_rank() if self.sharded else 0
        self.start, self.first = sum(counts[:rank]), rank == 0
        self.stop, self.total = self.start + counts[rank], sum(counts)

    def on_first_rank(self, function, *args, **kwargs):
        """``function(*args, **kwargs)``: computed on rank 0 and sent to every rank when sharded
        (``computed_on_first_rank``), else computed here."""
        return computed_on_first_rank(function, *args, **kwargs) if self.sharded else function(*args, **kwargs)

    def local(self, indices, per_row=1):
        """Which of the global ``indices`` (into all rows, ``per_row`` items each) fall on this
        rank: ``(here, local)``, a mask over ``indices`` and those entries as local indices."""
        indices = torch.as_tensor(indices)
        here = (indices >= self.start * per_row) & (indices < self.stop * per_row)
        return here, indices[here] - self.start * per_row

    def sum(self, *tensors):
        """Per-rank partial sums summed over all ranks, in place (one collective). Returns the
        tensors, or the one tensor."""
        if self.sharded:
            all_reduce_sum(*tensors)
        return tensors if len(tensors) > 1 else tensors[0]


def broadcast_tensor(tensor, src=0):
    """``tensor`` of rank ``src`` on every rank (shape and dtype included; other ranks may pass
    None). Without a process group, the tensor itself."""
    if not is_distributed():
        return tensor
    header = [None if tensor is None else (tuple(tensor.shape), tensor.dtype)]
    dist.broadcast_object_list(header, src=src)
    shape, dtype = header[0]
    out = tensor.contiguous() if dist.get_rank() == src else torch.empty(shape, dtype=dtype, device=_device())
    dist.broadcast(out, src=src)
    return out


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextmanager
def agree(what):
    """Run the block on every rank, then make every rank fail if any rank failed.

    The failing rank re-raises its own error; the others raise ``RuntimeError`` naming the rank
    and its message. Use it around local work that can fail (reading and checking a shard)
    before the collectives that would otherwise wait for the failed rank until the timeout.
    """
    error = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 -- every error must reach the other ranks
        error = err
    if not is_distributed():
        if error is not None:
            raise error
        return
    messages = [None] * dist.get_world_size()
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"rank {rank} failed while {what}: {message}")


def as_tensor_view(array):
    """A torch view of a NumPy, CuPy or torch array (no copy), for collectives."""
    if isinstance(array, torch.Tensor):
        return array
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


def _array_kind(value):
    if isinstance(value, torch.Tensor):
        return "torch"
    if isinstance(value, np.ndarray):
        return "numpy"
    return "cupy" if type(value).__module__.split(".")[0] == "cupy" else None


def _from_tensor(tensor, kind):
    if kind == "numpy":
        return tensor.cpu().numpy()
    if kind == "cupy":
        import cupy
        return cupy.from_dlpack(tensor)
    return tensor


def first_rank_first(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on rank 0, then on the other ranks, each its own result: for
    work that fills a cache the others then read (decoding an image folder once, not once per
    rank). A failure on rank 0 stops every rank."""
    first = rank_and_size()[0] == 0
    what = f"running {getattr(function, '__name__', 'a function')} on rank 0"
    with agree(what) if is_distributed() else nullcontext():
        result = function(*args, **kwargs) if first else None
    return result if first else function(*args, **kwargs)


def computed_on_first_rank(function, *args, **kwargs):
    """``function(*args, **kwargs)`` computed on rank 0 only and sent to every rank: arrays
    (NumPy, CuPy or torch, as a tuple or alone) by tensor broadcasts, other values pickled. For
    results that must be bitwise the same everywhere, say a factor from an eigendecomposition
    (two ranks' LAPACK calls need not agree on signs). A failure on rank 0 stops every rank."""
    if not is_distributed():
        return function(*args, **kwargs)
    first = dist.get_rank() == 0
    with agree(f"computing {getattr(function, '__name__', 'a result')} on rank 0"):
        result = function(*args, **kwargs) if first else None
    items = (result if isinstance(result, tuple) else (result,)) if first else None
    layout = [None if items is None else [(_array_kind(v), None if _array_kind(v) else v) for v in items],
              isinstance(result, tuple)]
    dist.broadcast_object_list(layout, src=0)
    entries, is_tuple = layout
    values = []
    for k, (kind, value) in enumerate(entries):
        if kind is None:
            values.append(value)
        else:
            tensor = broadcast_tensor(as_tensor_view(items[k]) if first else None)
            values.append(items[k] if first else _from_tensor(tensor, kind))
    return tuple(values) if is_tuple else values[0]
