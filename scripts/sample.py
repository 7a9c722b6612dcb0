"""Draw samples from a trained generator: a grid PNG, or one PNG per image.

    python scripts/sample.py --checkpoint checkpoints/celeba.pt --n 64 --nrow 8 --seed 0 --out samples/grid.png
    python scripts/sample.py --checkpoint checkpoints/celeba.pt --n 10000 --out-dir samples/fid/
"""
import sys
from pathlib import Path

from torchvision.utils import save_image

from convexgan.cli import common
from layerwise.progressive import load_checkpoint


def build_parser():
    parser = common.parser(__doc__)
    parser.add_argument("--checkpoint", default="checkpoints/celeba.pt")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--nrow", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="samples/grid.png", help="grid PNG")
    parser.add_argument("--out-dir", default=None, help="write the n images as separate PNG files here instead")
    return parser


def draw(args):
    if args.n < 1 or args.nrow < 1:
        raise ValueError(f"--n and --nrow must be positive, got {args.n} and {args.nrow}.")
    generator, _, _ = load_checkpoint(args.checkpoint)
    images = generator.sample(args.n, seed=args.seed)
    if args.out_dir:
        folder = Path(args.out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images):
            save_image(image, folder / f"{k:06d}.png")
        print(f"wrote {args.n} images to {folder}/")
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        save_image(images, args.out, nrow=args.nrow)
        print(f"wrote a grid of {args.n} samples to {args.out}")


def main(argv=None):
    return common.run(build_parser(), draw, argv)


if __name__ == "__main__":
    sys.exit(main())
