"""Train a face generator layer by layer, each stage in closed form plus a convex fit.

    python scripts/train_celeba.py --layers 4

CelebA is read from --data-root (the folder holding img_align_celeba/; by default data/celeba,
then $CONVEXGAN_DATA/celeba); when it is absent the script says so and trains on the 100 LFW
faces that ship with scikit-image. The last --holdout fraction of the images (file-name order)
is left out for scripts/eval_gan.py. Writes a sample grid per stage to --out-dir and the generator
to --checkpoint; a rerun with the same options resumes after the last finished stage.

Across processes (one node, or several: see the README), each rank training on its share of
the images and rank 0 writing the files:

    torchrun --standalone --nproc-per-node 2 scripts/train_celeba.py --layers 4
"""
import json
import logging
import sys
from pathlib import Path

from torchvision.utils import save_image

from convexgan.cli import common
from convexgan.data import face_dataset
from convexgan.distributed import first_rank_first
from layerwise.progressive import MAX_LAYERS, ProgressiveTrainer, stage_resolution

log = logging.getLogger("train_celeba")


def ranks(text):
    """'auto' -> 'auto'; '64' -> 64; '192,128,64,16' -> [192, 128, 64, 16]."""
    if text == "auto":
        return text
    values = common.integers(text)
    return values[0] if len(values) == 1 else values


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--layers", type=int, default=4, help=f"stages; resolution 4 * 2^layers (1..{MAX_LAYERS})")
    parser.add_argument("--dataset", default="celeba", choices=["celeba", "olivetti", "folder", "lfw"])
    parser.add_argument("--data-root", default=None,
                        help="celeba: folder holding img_align_celeba/; olivetti: olivettifaces.mat or its folder; "
                             "folder: any image folder")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of images left out for evaluation")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")
    parser.add_argument("--rank", type=ranks, default="auto",
                        help="noise dimension (kept SVT rank) of every stage, or one per stage: 192,128,64,16; "
                             "auto: 64, fewer on small sets (one per 8 training images)")
    parser.add_argument("--lam", type=float, default=3e-5,
                        help="weight decay of the convex patch fits (larger: smoother, blurrier detail)")
    parser.add_argument("--n-patterns", type=int, default=16,
                        help="sampled gates per output of each fit (48 outputs for RGB: a 4 x 4 window)")
    parser.add_argument("--patches", type=int, default=10000, help="patches each convex fit sees")
    parser.add_argument("--tol", type=float, default=1e-3, help="relative duality gap of each fit")
    parser.add_argument("--max-iter", type=int, default=5000,
                        help="iterations of each fit at most (Newton steps for gated fits)")
    parser.add_argument("--activation", default="gated", choices=["gated", "relu"],
                        help="patch networks: gated ReLU (fast, certified) or ReLU (exact, far slower)")
    common.add_device(parser)
    parser.add_argument("--out-dir", default="samples", help="folder for the sample grids")
    parser.add_argument("--checkpoint", default="checkpoints/celeba.pt")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def train(args):
    if not 1 <= args.layers <= MAX_LAYERS:
        raise ValueError(f"--layers must be between 1 and {MAX_LAYERS} (resolution 8 to "
                         f"{stage_resolution(MAX_LAYERS)} px), got {args.layers}.")
    with common.process_group() as (_, world):
        _train(args, world)


def _train(args, world):
    device = common.device(args.device)
    # rank 0 decodes the folder into the cache first; the other ranks read the cache
    data = first_rank_first(face_dataset, args.dataset, args.data_root, stage_resolution(args.layers), args.holdout,
                            args.limit)
    trainer = ProgressiveTrainer(layers=args.layers, rank=args.rank, lam=args.lam, n_patterns=args.n_patterns,
                                 n_patches=args.patches, tol=args.tol, max_iter=args.max_iter,
                                 activation=args.activation, seed=args.seed, device=device,
                                 data=data.description, distributed=world > 1)
    log.info("training on %s: %d images (%d held out), %d x %d x %d, device %s, %d process%s", data.description,
             len(data.train), len(data.test), *data.train.shape[1:], device, world, "es" if world > 1 else "")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.checkpoint).stem
    timings = []

    def on_stage(k, generator, seconds, info):
        grid = out / f"{stem}_stage{k}_{generator.resolution}px.png"
        save_image(generator.sample(64, seed=args.seed), grid, nrow=8)
        timings.append({"stage": k, "resolution": generator.resolution, "seconds": round(seconds, 2),
                        "rank": generator.stages[-1].noise_dim})
        log.info("stage %d grid: %s", k, grid)

    generator = trainer.fit(common.this_rank_rows(data.train), checkpoint=args.checkpoint, on_stage=on_stage)
    log.info("generator: %s (%d stages, %d px); stages this run: %s", args.checkpoint, len(generator.stages),
             generator.resolution, json.dumps(timings))


def main(argv=None):
    return common.run(build_parser(), train, argv)


if __name__ == "__main__":
    sys.exit(main())
