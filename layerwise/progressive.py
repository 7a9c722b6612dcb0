"""Progressive convex GAN: a face generator trained one resolution at a time, each stage in
closed form plus a convex fit, with no gradient descent-ascent.

Stage 1 (resolution r_1 = 8) is the convex Wasserstein GAN of a linear generator: the closed
form ``G* = U (S^2 - lam)_+^{1/2} V^T`` (``svt_factors``) of the centered real images, sampled
as ``mean + z B / sqrt(n)`` with z ~ N(0, I_k). Stage k >= 2 doubles the resolution:

    x_k = up(x_{k-1}) + f_k(x_{k-1}) + m_k + s_k(x_{k-1}) * T_k(z_k B_k / sqrt(n))

- ``up`` is bilinear 2x upsampling; ``f_k`` a two-layer (gated) ReLU network on the 3 x 3 patch
  around every input pixel (plus its position) predicting the 4 x 4 output window around the
  2 x 2 block that pixel becomes: ``fit_relu_generator``, a certified convex program, fitted to
  the real images' residual ``X_k - up(x_{k-1})`` on a random subset of patches. Neighbouring
  windows overlap by one pixel and are blended with tent weights (3/4 on a window's own block,
  1/4 on its border): a network predicting bare 2 x 2 blocks (pixel shuffle) leaves a seam at
  every block border, which the samples show as a 2 x 2 grid;
- what ``f_k`` leaves, ``E_k = X_k - up(x_{k-1}) - f_k(x_{k-1})``, is large at edges and texture
  and small on skin: its local scale ``s_k = a + b |f_k| + c std_3x3(x_{k-1})`` (per channel, a
  least-squares fit of ``|E_k - m_k|``) carries that, so the noise lands where detail is;
- ``z_k B_k`` is the convex-GAN closed form (SVT) of the standardized residual ``(E_k - m_k) / s_k``,
  fresh noise z_k ~ N(0, I_{rank_k}): its covariance, on the top rank_k directions;
- ``T_k`` gives every pixel the marginal distribution of the real standardized residual: the
  monotone rearrangement of a Gaussian onto its quantiles (``Q(Phi(w / std w))``), which is the
  optimal transport map in one dimension, i.e. the exact Wasserstein GAN of each pixel on its
  own. The quadratic discriminator of the SVT sees second moments only and would leave the
  residual Gaussian; real detail is sparse (kurtosis 5 to 7 at 16 to 64 px), and T restores it
  together with the energy of the directions beyond rank_k;
- that energy sits in each pixel, not in the finest band: rank_k directions are smooth, and the
  differences between neighbouring pixels fall short. The stage's noise is scaled so that the
  finest Laplacian band of its samples has the real images' energy (``_match_band_energy``):
  detail matched in energy, not shrunk toward zero.

In training, ``x_{k-1}`` is the previous stage's output on the training set: each real image
is paired with its own noise coordinates ``sqrt(n) Q`` (the left factor of the SVT), so the
stage's input is the previous stage's output, not the real low-resolution image. The kept rank
of every stage is at most its noise dimension (``rank``) and n - 1: the closed form never divides
by the singular values of a rank-deficient input (the public reference's flaw), since no stage
inverts its input. Earlier stages are frozen; a checkpoint is written atomically after each stage.
"""
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convexgan.checkpoints import load_state, save_state
from convexgan.distributed import RowShard, agree, computed_on_first_rank
from convexgan.generator import fit_relu_generator
from convexgan.metrics import laplacian_pyramid
from convexgan.networks import TwoLayerGatedReLU, TwoLayerReLU
from convexgan.svt import svt_basis, svt_factors
from convexgan.validation import as_images, check_positive, check_positive_int

log = logging.getLogger(__name__)
BASE_RESOLUTION = 4  # stage k has resolution 4 * 2^k
MAX_LAYERS = 6       # 256 x 256


def stage_resolution(k):
    return BASE_RESOLUTION * 2 ** k


def _upsample(images):
    return F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)


QUANTILE_LEVELS = torch.linspace(0.0005, 0.9995, 1000)  # where T's quantile functions are tabulated


def _local_std(images):
    """Standard deviation of every pixel's 3 x 3 neighbourhood (edges replicated), (N, C, r, r)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    mean, second = F.avg_pool2d(padded, 3, stride=1), F.avg_pool2d(padded * padded, 3, stride=1)
    return (second - mean * mean).clamp_min(0).sqrt()


def _quantile_function(u, quantiles):
    """Values at probabilities u (N, C, ...) of the quantile functions tabulated at
    ``QUANTILE_LEVELS`` (C, L), linear in between, constant beyond the ends."""
    L = quantiles.shape[1]
    levels = QUANTILE_LEVELS.to(u)
    position = ((u - levels[0]) / (levels[1] - levels[0])).clamp(0, L - 1)
    below = position.floor().long().clamp(max=L - 2)
    t = position - below
    table = quantiles[None].expand(u.shape[0], -1, -1)
    low = torch.gather(table, 2, below.flatten(2)).reshape(u.shape)
    high = torch.gather(table, 2, (below + 1).flatten(2)).reshape(u.shape)
    return low + t * (high - low)


WINDOW = 4  # the output window a patch network predicts: its 2 x 2 block and a 1-pixel border
_TENT = torch.tensor([0.25, 0.75, 0.75, 0.25])  # overlapping at stride 2, these weights sum to 1


def _windows(images):
    """(N, C, 2r, 2r) -> (N, 16C, r^2): the 4 x 4 window around every 2 x 2 block (edges replicated)."""
    return F.unfold(F.pad(images, (1, 1, 1, 1), mode="replicate"), WINDOW, stride=2)


def _overlap_add(windows, size):
    """Inverse of ``_windows`` for predicted windows (N, 16C, r^2): their average at every pixel,
    weighted by a tent that is 3/4 on a window's own block and 1/4 on its border, so that the
    image has no seams at block borders. Returns (N, C, size, size)."""
    weight = torch.outer(_TENT, _TENT).flatten().to(windows).repeat(windows.shape[1] // WINDOW ** 2)[:, None]
    fold = dict(output_size=(size + 2, size + 2), kernel_size=WINDOW, stride=2)
    total = F.fold(windows * weight, **fold)
    coverage = F.fold(weight.expand(1, -1, windows.shape[2]), **fold)  # 1 inside, 3/4 or 9/16 at the edges
    return (total / coverage)[..., 1:-1, 1:-1]


def patch_features(images):
    """(N, C, r, r) -> (N, r^2, 9C + 3): every pixel's 3 x 3 neighbourhood (edges replicated),
    its position in [-1, 1]^2, and a constant 1 (so gates are affine)."""
    N, C, r, _ = images.shape
    patches = F.unfold(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3).transpose(1, 2)
    grid = torch.linspace(-1, 1, r, dtype=images.dtype, device=images.device)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    extra = torch.stack([ys.flatten(), xs.flatten(), torch.ones_like(xs.flatten())], 1)
    return torch.cat([patches, extra.expand(N, r * r, 3)], 2)


class GaussianStage(nn.Module):
    """``mean + z B / sqrt(n)``: the closed-form linear generator of the first stage."""

    def __init__(self, channels, resolution, rank, n_train):
        super().__init__()
        self.shape = (channels, resolution, resolution)
        self.n_train = n_train
        self.register_buffer("mean", torch.zeros(channels * resolution ** 2))
        self.register_buffer("factor", torch.zeros(rank, channels * resolution ** 2))

    @property
    def noise_dim(self):
        return self.factor.shape[0]

    def forward(self, previous, noise):
        """previous: ignored (None); noise (N, rank) -> images (N, C, r, r)."""
        return (self.mean + noise @ self.factor / self.n_train ** 0.5).reshape(-1, *self.shape)


class RefineStage(nn.Module):
    """``up(x) + f(x) + m + s(x) * T(z B / sqrt(n))``: doubles the resolution of x (N, C, r, r)."""

    def __init__(self, channels, resolution, rank, n_train, n_neurons, activation="gated"):
        super().__init__()
        self.shape = (channels, 2 * resolution, 2 * resolution)
        self.n_train = n_train
        network_class = TwoLayerGatedReLU if activation == "gated" else TwoLayerReLU
        self.network = network_class(9 * channels + 3, n_neurons, WINDOW ** 2 * channels).float()
        self.register_buffer("mean", torch.zeros(channels * 4 * resolution ** 2))
        self.register_buffer("factor", torch.zeros(rank, channels * 4 * resolution ** 2))
        self.register_buffer("scale_coef", torch.zeros(channels, 3))  # s = a + b |f| + c std_3x3(x)
        self.register_buffer("scale_floor", torch.zeros(()))
        self.register_buffer("noise_std", torch.ones(self.shape))      # of z B / sqrt(n), per pixel
        self.register_buffer("residual_std", torch.ones(self.shape))   # of (E - m) / s, per pixel
        self.register_buffer("quantiles", torch.zeros(channels, len(QUANTILE_LEVELS)))  # of its standardized values

    @property
    def noise_dim(self):
        return self.factor.shape[0]

    def conditional(self, previous):
        """``(up(x) + f(x), s(x))``, both (N, C, 2r, 2r): the stage's conditional mean (less m)
        and the local scale of its residual."""
        detail, magnitude, contrast = self.scale_features(previous)
        return detail, self.local_scale(magnitude, contrast)

    def scale_features(self, previous):
        """``(up(x) + f(x), |f(x)|, up(std_3x3(x)))``, each (N, C, 2r, 2r): the conditional mean
        and what the local scale is a function of."""
        N, C, r, _ = previous.shape
        f = _overlap_add(self.network(patch_features(previous)).transpose(1, 2), 2 * r)
        return _upsample(previous) + f, f.abs(), _upsample(_local_std(previous))

    def local_scale(self, magnitude, contrast):
        """``s = a + b |f| + c std_3x3(x)`` per channel, at least ``scale_floor``; inputs (N, C, 2r, 2r)."""
        a, b, c = (coef[:, None, None] for coef in self.scale_coef.unbind(1))
        return (a + b * magnitude + c * contrast).clamp_min(self.scale_floor)

    def standardized_residual(self, noise):
        """``T(z B / sqrt(n))`` for noise z (N, rank): (N, C, 2r, 2r), every pixel with the marginal
        distribution of the real standardized residual."""
        white = (noise @ self.factor / self.n_train ** 0.5).reshape(-1, *self.shape)
        probability = 0.5 * (1 + torch.erf(white / (self.noise_std * 2 ** 0.5)))
        return self.residual_std * _quantile_function(probability, self.quantiles)

    def forward(self, previous, noise):
        detail, scale = self.conditional(previous)
        return detail + self.mean.reshape(self.shape) + scale * self.standardized_residual(noise)


class ProgressiveGenerator(nn.Module):
    """A trained face generator: a stack of stages, each doubling the resolution.

    Parameters
    ----------
    stages : sequence of nn.Module, default ()
        A ``GaussianStage`` (the closed-form linear generator), then one ``RefineStage`` per doubling.
    """

    def __init__(self, stages=()):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    @property
    def resolution(self):
        """The side r of the generated images, in pixels (int)."""
        return self.stages[-1].shape[-1]

    def forward(self, noises):
        """Generate images from one noise tensor per stage.

        Parameters
        ----------
        noises : sequence of torch.Tensor
            One (N, noise_dim) tensor per stage.

        Returns
        -------
        torch.Tensor of shape (N, C, r, r)
            Images, unclipped.
        """
        x = None
        if len(noises) != len(self.stages):
            raise ValueError(f"forward needs one noise tensor per stage ({len(self.stages)}), got {len(noises)}.")
        for stage, noise in zip(self.stages, noises):
            x = stage(x, noise)
        return x

    @torch.no_grad()
    def sample(self, n, seed=0, batch=256):
        """Draw images; the same seed gives the same images.

        Parameters
        ----------
        n : int
            How many.
        seed : int, default 0
            Seed of the noise.
        batch : int, default 256
            Images generated at a time (memory).

        Returns
        -------
        torch.Tensor of shape (n, C, r, r)
            Images in [0, 1], float32.
        """
        check_positive_int(n, "n")
        device = self.stages[0].factor.device
        generator = torch.Generator(device).manual_seed(seed)
        noises = [torch.randn(n, stage.noise_dim, generator=generator, device=device) for stage in self.stages]
        chunks = [self([noise[i:i + batch] for noise in noises]) for i in range(0, n, batch)]
        return torch.cat(chunks).clamp(0, 1)

    def spec(self):
        """What rebuilds the module before its state_dict is loaded (for checkpoints).

        Returns
        -------
        list of dict
            One dict of plain values per stage; ``from_spec`` takes it.
        """
        return [dict(kind=type(s).__name__, channels=s.shape[0], resolution=s.shape[-1], rank=s.noise_dim,
                     n_train=s.n_train, n_neurons=getattr(s, "network", None) and s.network.hidden.weight.shape[0],
                     activation="gated" if isinstance(getattr(s, "network", None), TwoLayerGatedReLU) else "relu")
                for s in self.stages]

    @classmethod
    def from_spec(cls, spec):
        """An untrained generator of the shape ``spec`` describes; load the state_dict into it.

        Parameters
        ----------
        spec : list of dict
            What ``spec()`` returned.

        Returns
        -------
        ProgressiveGenerator
            The module, with the stages' buffers not yet loaded.
        """
        stages = []
        for s in spec:
            if s["kind"] == "GaussianStage":
                stages.append(GaussianStage(s["channels"], s["resolution"], s["rank"], s["n_train"]))
            else:
                stages.append(RefineStage(s["channels"], s["resolution"] // 2, s["rank"], s["n_train"],
                                          s["n_neurons"], s["activation"]))
        return cls(stages)


def save_checkpoint(path, generator, config, train_outputs=None):
    """Atomically write the generator (spec + weights), the training configuration and, while
    training is unfinished, the last stage's outputs on the training set (to resume from)."""
    save_state(path, {"spec": generator.spec(), "state_dict": generator.state_dict(), "config": config,
                      "train_outputs": train_outputs})


def _saved_run(checkpoint):
    """``load_checkpoint(checkpoint)``, or None when there is no file (or no path)."""
    return load_checkpoint(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None


def _rows_path(checkpoint, shard, stage):
    """Where a rank of a distributed run keeps its training outputs after ``stage``: beside the
    checkpoint, named by the rows it holds (a resume with another number of processes finds none)."""
    path = Path(checkpoint)
    return path.with_name(f"{path.name}.rows{shard.start}-{shard.stop}.stage{stage}")


def _load_rows(checkpoint, shard, stage):
    """This rank's training outputs after ``stage``, written by a distributed run."""
    path = _rows_path(checkpoint, shard, stage)
    if not path.is_file():
        raise ValueError(f"{path} is missing: a distributed run resumes with the same number of processes "
                         f"and images; or delete {checkpoint} and train again.")
    return load_state(path, f"delete {checkpoint} and train again.")["outputs"]


def load_checkpoint(path):
    """Read a generator checkpoint; no code in the file is run (``weights_only``).

    Parameters
    ----------
    path : str or path-like
        A file written by ``save_checkpoint`` (``convexgan-train-celeba --checkpoint``).

    Returns
    -------
    generator : ProgressiveGenerator
        The trained generator, in evaluation mode.
    config : dict
        The trainer's configuration (``ProgressiveTrainer.config()``).
    train_outputs : torch.Tensor or None
        The last stage's outputs on the training set while training is unfinished (to resume).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}: train one first (scripts/train_celeba.py).")
    fix = "delete it and train again."
    state = load_state(path, fix)
    try:
        generator = ProgressiveGenerator.from_spec(state["spec"])
        generator.load_state_dict(state["state_dict"])
    except Exception as err:  # a foreign file or one from another version of the code
        raise ValueError(f"checkpoint {path} does not hold a generator ({err}): {fix}") from err
    return generator.eval(), state["config"], state["train_outputs"]


def _closed_form(residual, rank, shard, device="cpu"):
    """SVT of the centered residual (n, d) of all ranks' rows (this rank's rows (n_local, d)):
    mean (d,), factor B (k, d), this rank's training noise (n_local, k), lam. The
    eigendecomposition runs on ``device`` (``svt_factors`` picks NumPy, CuPy or torch.linalg); on
    several ranks it is the one of the summed d x d Gram matrix, on rank 0."""
    n = shard.total
    mean = shard.sum(residual.sum(0)) / n
    centered = (residual - mean).double().to(device)
    rank = min(rank, residual.shape[1], n - 1)
    if shard.sharded:
        Vt, s, kept, lam = computed_on_first_rank(svt_basis, shard.sum(centered.T @ centered), rank=rank)
        Q, B = centered @ Vt.T / s, kept[:, None].sqrt() * Vt
    else:
        Q, B, lam = svt_factors(centered, rank=rank)
    return mean, B.float().cpu(), Q.float().cpu() * n ** 0.5, lam


class ProgressiveTrainer:
    """Trains a ``ProgressiveGenerator`` on real images, stage by stage.

    Stage 1 is the closed-form linear generator of the convex WGAN (``svt``); each later stage
    doubles the resolution with a certified convex patch fit (``fit_relu_generator``) plus the
    closed-form generator of its standardized residual.

    Parameters
    ----------
    layers : int, default 4
        Stages; the resolution is 4 * 2^layers.
    rank : int, sequence of int or "auto", default "auto"
        Noise dimension and kept rank of each stage's closed form: one for all stages, one per
        stage, or "auto" (64, and one per 8 training images on smaller sets: beyond that,
        directions are single images' noise).
    lam : float, default 3e-5
        Weight decay of the convex patch fits (larger: smoother, blurrier detail).
    n_patterns : int, default 16
        Sampled gates per output of each fit.
    n_patches : int, default 10000
        Patches each fit sees.
    activation : {"gated", "relu"}, default "gated"
        The patch networks: gated ReLU (second order, certified) or ReLU (exact, far slower).
    tol : float, default 1e-3
        Relative duality gap of each fit.
    max_iter : int, default 5000
        Iterations of each fit at most (Newton steps for gated fits).
    seed : int, default 0
        Seed of the gates, the patches and the training noise.
    device : str, default "cpu"
        Where the fits and the closed forms run.
    data : str, default ""
        A description of the training set, kept in the checkpoint so that a resume on other data
        is refused.
    distributed : bool, default False
        Under a ``torch.distributed`` process group (``torchrun``), every rank calls ``fit`` with
        its own contiguous share of the training images (in rank order) and gets the generator of
        all of them, the same on every rank: sums over images (means, Gram matrices, the scale
        fit, the convex fits' solver) are all-reduced, eigendecompositions run on rank 0, random
        draws index all images. Only rank 0 writes the checkpoint; each rank writes its training
        outputs beside it (``<checkpoint>.rows<start>-<stop>.stage<k>``), so a resume needs the
        same number of processes (and a folder all ranks see).
    """

    def __init__(self, layers=4, rank="auto", lam=3e-5, n_patterns=16, n_patches=10000, activation="gated",
                 tol=1e-3, max_iter=5000, seed=0, device="cpu", data="", distributed=False):
        self.layers = check_positive_int(layers, "layers")
        if layers > MAX_LAYERS:
            raise ValueError(f"layers={layers}: at most {MAX_LAYERS} ({stage_resolution(MAX_LAYERS)} px) are supported.")
        if rank == "auto":
            self.rank = rank
        else:
            ranks = [rank] * layers if np.isscalar(rank) else list(rank)
            if len(ranks) != layers:
                raise ValueError(f"rank needs one value per stage ({layers}), got {len(ranks)}: {rank}.")
            self.rank = [check_positive_int(r, "rank") for r in ranks]
        self.lam = check_positive(lam, "lam")
        self.n_patterns = check_positive_int(n_patterns, "n_patterns")
        self.n_patches = check_positive_int(n_patches, "n_patches")
        self.activation = activation
        if activation not in ("gated", "relu"):
            raise ValueError(f"activation must be 'gated' or 'relu', got {activation!r}.")
        self.tol, self.max_iter, self.seed = check_positive(tol, "tol"), check_positive_int(max_iter, "max_iter"), seed
        self.device, self.data, self.distributed = device, data, distributed
        if distributed and activation == "relu":
            raise ValueError("distributed training needs activation='gated': the ReLU cones are not sharded.")

    def config(self):
        """What the trained generator depends on (the device does not).

        Returns
        -------
        dict
            The hyperparameters and the data description; a resume needs the same.
        """
        return {k: getattr(self, k) for k in ("layers", "rank", "lam", "n_patterns", "n_patches",
                                              "activation", "tol", "max_iter", "seed", "data")}

    def real_pyramid(self, images, shard=None):
        """The real images at every stage's resolution.

        Parameters
        ----------
        images : ndarray of uint8, shape (N, R, R, C)
            Training images, R = 4 * 2^layers.
        shard : RowShard, optional
            Where these images sit among all ranks' (default: all of them are here).

        Returns
        -------
        list of torch.Tensor
            Float images (N, C, r_k, r_k) in [0, 1], one per stage.
        """
        shard = shard or RowShard(len(images), sharded=False)
        with agree("checking its images") if shard.sharded else nullcontext():
            images = np.asarray(images)
            final = stage_resolution(self.layers)
            if images.ndim != 4 or images.shape[1:3] != (final, final) or images.shape[3] not in (1, 3):
                raise ValueError(f"images must be uint8 (N, {final}, {final}, 1 or 3) for layers={self.layers}, "
                                 f"got shape {images.shape}: load them at resolution {final}.")
            if shard.sharded and len(images) == 0:
                raise ValueError(f"this rank has no images: run at most {shard.total} processes.")
            x = as_images(images, "images") if len(images) else None
        if shard.total < 2:
            raise ValueError(f"need at least 2 training images, got {shard.total}.")
        pyramid = [x]
        for _ in range(self.layers - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        return pyramid[::-1]

    def fit(self, images, checkpoint=None, on_stage=None):
        """Train the generator stage by stage.

        Parameters
        ----------
        images : ndarray of uint8, shape (N, R, R, C)
            Training images, R = 4 * 2^layers (with ``distributed``, this rank's share).
        checkpoint : str or path-like, optional
            Written atomically after every stage; a run resumes from it when it holds a partial
            run of the same configuration.
        on_stage : callable, optional
            ``on_stage(k, generator, seconds, info)`` after each stage, on rank 0 only (sample
            grids, logs).

        Returns
        -------
        ProgressiveGenerator
            The trained generator, in evaluation mode.
        """
        shard = RowShard(len(images), self.distributed)
        reals = self.real_pyramid(images, shard)
        generator, outputs = ProgressiveGenerator(), None
        saved = shard.on_first_rank(_saved_run, checkpoint)  # sharded: rank 0 reads, every rank gets it
        if saved is not None:
            generator, config, outputs = saved
            if config != self.config():
                raise ValueError(f"checkpoint {checkpoint} was trained with {config}, not {self.config()}: "
                                 "pass another --checkpoint or the same options.")
            if len(generator.stages) == self.layers:
                log.info("checkpoint %s already holds all %d stages", checkpoint, self.layers)
                return generator
            if outputs is not None:  # written by one process: this rank's rows of them
                outputs = outputs[shard.start:shard.stop]
            elif shard.sharded:
                with agree("reading its training outputs"):
                    outputs = _load_rows(checkpoint, shard, len(generator.stages))
            else:
                raise ValueError(f"checkpoint {checkpoint} was written by a distributed run, whose ranks keep "
                                 "their training outputs beside it: resume it with torchrun and as many processes.")
            log.info("resuming after stage %d of %d from %s", len(generator.stages), self.layers, checkpoint)
        for k in range(len(generator.stages) + 1, self.layers + 1):
            start = time.perf_counter()
            stage, outputs, info = self._fit_stage(k, reals[k - 1], outputs, shard)
            generator.stages.append(stage)
            seconds = time.perf_counter() - start
            log.info("stage %d (%d px): %.1f s, kept rank %d, lam %.3g%s", k, stage.shape[-1], seconds,
                     stage.noise_dim, info["svt_lam"],
                     f", fit gap {info['fit'].gap:.2g}, {info['fit'].n_neurons} neurons" if "fit" in info else "")
            unfinished = k < self.layers
            if checkpoint is not None and shard.sharded:
                # each rank's outputs of stage k, then the checkpoint, then the outputs of stage k - 1
                # go: a run stopped anywhere in between still resumes from one of the two
                if unfinished:
                    with agree("writing its training outputs"):
                        save_state(_rows_path(checkpoint, shard, k), {"outputs": outputs})
                with agree("writing the checkpoint"):
                    if shard.first:
                        save_checkpoint(checkpoint, generator, self.config())
                _rows_path(checkpoint, shard, k - 1).unlink(missing_ok=True)
            elif checkpoint is not None:
                save_checkpoint(checkpoint, generator, self.config(), outputs if unfinished else None)
            if on_stage is not None and shard.first:
                on_stage(k, generator, seconds, info)
        return generator.eval()

    def stage_rank(self, k, n_train):
        """The kept rank (noise dimension) of a stage.

        Parameters
        ----------
        k : int
            The stage, 1-based.
        n_train : int
            Training images.

        Returns
        -------
        int
            ``rank`` for stage k; with "auto", 64 or one per 8 training images if fewer.
        """
        return max(1, min(64, n_train // 8)) if self.rank == "auto" else self.rank[k - 1]

    def _fit_stage(self, k, real, previous, shard):
        """Stage k from real images (N, C, r, r) and the previous stage's training outputs (this
        rank's, at rows ``shard``)."""
        _, C, r, _ = real.shape
        N = shard.total
        rank = self.stage_rank(k, N)
        if previous is None:
            mean, factor, noise, lam = _closed_form(real.flatten(1), rank, shard, self.device)
            stage = GaussianStage(C, r, len(factor), N)
            stage.mean.copy_(mean)
            stage.factor.copy_(factor)
            return stage, stage(None, noise), {"svt_lam": lam}
        base = _upsample(previous)
        targets = _windows(real - base).transpose(1, 2)  # (N, r^2/4, 16C)
        features = patch_features(previous)
        generator = torch.Generator().manual_seed(self.seed + k)
        pick = torch.randperm(N * features.shape[1], generator=generator)[:self.n_patches]  # of all images' patches
        _, pick = shard.local(pick, features.shape[1])
        network = fit_relu_generator(
            features.flatten(0, 1)[pick].double().numpy(), targets.flatten(0, 1)[pick].double().numpy(),
            lam=self.lam, n_patterns=self.n_patterns, activation=self.activation, tol=self.tol,
            max_iter=self.max_iter, seed=self.seed + k, progress=True, device=self.device,
            dtype="float32" if str(self.device).startswith("cuda") else "float64", distributed=shard.sharded)
        stage = RefineStage(C, r // 2, rank, N, network.hidden.weight.shape[0], self.activation)
        stage.network.load_state_dict(network.float().state_dict())
        with torch.no_grad():
            detail, scale, noise, lam = self._fit_residual(stage, real, previous, generator, shard)
            _match_band_energy(stage, detail, scale, real, generator, shard)
            outputs = detail + stage.mean.reshape(stage.shape)
            for rows, z in zip(torch.arange(len(real)).split(256), noise.split(256)):  # what forward gives, in place
                outputs[rows] += scale[rows] * stage.standardized_residual(z)
        return stage, outputs, {"svt_lam": lam, "fit": network.certificate}

    def _fit_residual(self, stage, real, previous, generator, shard, n_samples=300_000):
        """The residual model of a refine stage whose network is fitted: mean, local scale (least
        squares of |E - m| on ``n_samples`` random pixels per channel), the SVT of the standardized
        residual, and its marginals, from the images of all ranks (this rank's: ``real`` and
        ``previous``, at rows ``shard``). Returns the stage's conditional mean and scale on this
        rank's training inputs (N, C, 2r, 2r), their training noise (N, rank) and the SVT's lam."""
        _, C, r, _ = real.shape
        N = shard.total
        details, magnitudes, contrasts = zip(*[stage.scale_features(chunk) for chunk in previous.split(256)])
        detail = torch.cat(details)
        residual = real - detail
        mean = shard.sum(residual.sum(0)) / N
        deviation = residual - mean
        magnitude, contrast = torch.cat(magnitudes), torch.cat(contrasts)
        _, pick = shard.local(torch.randint(N * r * r, (n_samples,), generator=generator), r * r)
        for c in range(C):  # least squares by the normal equations: 3 x 3, summed over ranks
            design = torch.stack([torch.ones(len(pick)), magnitude[:, c].flatten()[pick],
                                  contrast[:, c].flatten()[pick]], 1).double()
            target = deviation[:, c].flatten()[pick].abs().double()
            gram, moment = shard.sum(design.T @ design, design.T @ target)
            stage.scale_coef[c] = torch.linalg.solve(gram, moment)
        # where the fit would reach 0
        stage.scale_floor.fill_(0.2 * float(shard.sum(deviation.abs().sum().double())) / (N * deviation[0].numel()))
        scale = stage.local_scale(magnitude, contrast)
        standardized = deviation / scale
        del magnitude, contrast, magnitudes, contrasts, details
        centre = shard.sum(standardized.sum(0)) / N  # the per-pixel std over all images, in two passes
        spread = shard.sum((standardized - centre).square().sum(0)) / (N - 1)
        stage.residual_std.copy_(spread.sqrt().clamp_min(1e-8))
        values = (standardized / stage.residual_std).transpose(0, 1).flatten(1)  # (C, N r^2)
        here, pick = shard.local(torch.randint(N * r * r, (n_samples,), generator=generator), r * r)
        sample = torch.zeros(C, n_samples, dtype=values.dtype)
        sample[:, here] = values[:, pick]
        stage.quantiles.copy_(torch.quantile(shard.sum(sample), QUANTILE_LEVELS, dim=1).T)
        _, factor, noise, lam = _closed_form(standardized.flatten(1), stage.noise_dim, shard, self.device)
        stage.mean.copy_(mean.flatten())
        stage.factor = factor  # the kept rank may be below the requested one
        stage.noise_std.copy_((factor.square().sum(0) / N).sqrt().reshape(stage.shape).clamp_min(1e-12))
        return detail, scale, noise, lam


def _match_band_energy(stage, detail, scale, real, generator, shard, n=512):
    """Scale a fitted refine stage's noise (its ``residual_std``) so that the finest Laplacian band
    of its samples on the first ``n`` training inputs has the real images' energy: the SVT keeps
    only the top directions of the residual, and detail spread over the rest would be lost.
    ``detail``, ``scale`` (N, C, 2r, 2r) are the stage's conditional mean and scale on its
    training inputs, ``real`` the real images they stand for (this rank's, at rows ``shard``)."""
    n = min(n, shard.total)
    draws = torch.randn(n, stage.noise_dim, generator=generator)  # for the first n images of all ranks
    mine = slice(0, max(0, min(shard.stop, n) - shard.start))
    noise = scale[mine] * stage.standardized_residual(draws[shard.start:shard.start + mine.stop])
    fixed = detail[mine] + stage.mean.reshape(stage.shape)
    band_fixed, band_noise, band_real = (laplacian_pyramid(x, x.shape[-1] // 2)[0] for x in (fixed, noise, real[mine]))
    # |band(fixed + g noise)|^2 = |band(real)|^2: a g^2 + 2 b g + c = 0
    a, b, c = shard.sum(torch.stack([band_noise.square().sum(), (band_fixed * band_noise).sum(),
                                     band_fixed.square().sum() - band_real.square().sum()]).double())
    gain = (-b + (b * b - a * c).clamp_min(0).sqrt()) / a
    stage.residual_std *= gain.clamp_min(0)


def pca_generator(images, rank):
    """The best rank-k linear generator, the baseline the public reference's linear stages can
    reach at most: a Gaussian with the data's covariance on its top ``rank`` principal
    directions. ``images`` uint8 (N, r, r, C). Returns a one-stage ``ProgressiveGenerator``."""
    x = as_images(images, "images")
    N, C, r, _ = x.shape
    X = x.flatten(1).double()
    centered = X - X.mean(0)
    Q, _, _ = svt_factors(centered, rank=min(check_positive_int(rank, "rank"), N - 1))
    stage = GaussianStage(C, r, Q.shape[1], N)
    stage.mean.copy_(X.mean(0))
    stage.factor.copy_(Q.T @ centered)  # S V^T: the principal directions, unshrunk
    return ProgressiveGenerator([stage])
