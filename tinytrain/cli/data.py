"""`tinytrain data ...`: list datasets, build the pocket benchmark, episode statistics, episode files."""
from __future__ import annotations

import json

from .adapt import SEED, one_line_errors, whole_number
from ..errors import BadInput


def register(sub) -> None:
    p = one_line_errors(sub.add_parser("data", help="datasets: list, build the pocket benchmark, stats, sample "
                                                    "episodes"))
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    q = one_line_errors(dsub.add_parser("list", help="named datasets and where the pocket benchmark lives"))
    q.set_defaults(func=_list)

    q = one_line_errors(dsub.add_parser("build", help="build a benchmark from installed packages (offline)"))
    q.add_argument("name", choices=["pocket"], help="what to build")
    q.add_argument("--root", default=None, help="target folder (default: $TINYTRAIN_DATA/pocket or user cache)")
    q.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    q.add_argument("--small", action="store_true", help="tiny version for smoke tests")
    q.set_defaults(func=_build)

    for name, helptext in (("stats", "classes, images and Table-5 style episode statistics"),
                           ("episodes", "sample episodes and save them as JSON for identical evaluation")):
        q = one_line_errors(dsub.add_parser(name, help=helptext))
        q.add_argument("dataset", help="folder (ROOT/<class>/<image>), pocket domain, or <source>:<path>")
        q.add_argument("--split", default="all", choices=["train", "val", "test", "all"])
        q.add_argument("--episodes", type=whole_number("--episodes", 1, 1_000_000, "e.g. 200"), default=200,
                       help="number of episodes (default 200)")
        q.add_argument("--seed", type=SEED, default=0)
        q.add_argument("--mode", default="metadataset", choices=["metadataset", "fixed"])
        q.add_argument("--ways", type=whole_number("--ways", 2, hint="e.g. 5"), default=None,
                       help="fixed mode: classes per episode")
        q.add_argument("--shots", type=whole_number("--shots", 1, hint="e.g. 5"), default=None,
                       help="fixed mode: support images per class")
        q.add_argument("--queries", type=whole_number("--queries", 1, hint="e.g. 10"), default=None,
                       help="fixed mode: query images per class")
        q.add_argument("--pocket-root", default=None, help="where the pocket benchmark lives")
        if name == "stats":
            q.add_argument("--json", action="store_true", help="print JSON")
            q.add_argument("--verify", action="store_true", help="decode every image first; skip bad ones")
            q.set_defaults(func=_stats)
        else:
            q.add_argument("--out", required=True, help="JSON file to write")
            q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
            q.set_defaults(func=_episodes)

    q = one_line_errors(dsub.add_parser("samples", help="a few real photographs as support/query class folders "
                                        "(crops of scikit-image's bundled photos), e.g. for `tinytrain bench mcu`"))
    q.add_argument("out", help="folder to create (OUT/support, OUT/query)")
    q.add_argument("--classes", type=whole_number("--classes", 2, 20, "e.g. 5"), default=5)
    q.add_argument("--support", type=whole_number("--support", 1, 100, "e.g. 3"), default=3,
                   help="images per class in OUT/support")
    q.add_argument("--query", type=whole_number("--query", 1, 100, "e.g. 1"), default=1,
                   help="images per class in OUT/query")
    q.add_argument("--seed", type=SEED, default=0)
    q.set_defaults(func=_samples)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _samples(args) -> int:
    from ..mcu.samples import write_samples
    s, q = write_samples(args.out, args.classes, args.support, args.query, args.seed)
    print(f"wrote {s} and {q}")
    return 0


def _list(args) -> int:
    from tinytrain.data import dataset_names
    from tinytrain.data.pocket import POCKET_SOURCE, pocket_root
    print("named datasets (besides any class-per-folder path):")
    for n in dataset_names():
        print(f"  {n}{'  (pocket source)' if n == POCKET_SOURCE else ''}")
    print(f"pocket benchmark root: {pocket_root()}")
    return 0


def _build(args) -> int:
    from tinytrain.data.pocket import build_pocket
    root = build_pocket(args.root, force=args.force, small=args.small)
    manifest = json.loads((root / "manifest.json").read_text())
    for name, d in manifest["domains"].items():
        print(f"{name:16s} {d['n_classes']:5d} classes {d['n_images']:7d} images")
    print(f"pocket benchmark ready at {root} (built in {manifest['build_seconds']} s)")
    return 0


def _sampler(args):
    from tinytrain.data import EpisodeSampler, open_dataset
    if args.episodes < 1:
        raise BadInput(f"--episodes must be >= 1, got {args.episodes}")
    fixed_only = [f"--{k}" for k in ("ways", "shots", "queries") if getattr(args, k) is not None]
    if fixed_only and args.mode != "fixed":      # Meta-Dataset sampling would ignore them
        raise BadInput(f"{', '.join(fixed_only)} {'is' if len(fixed_only) == 1 else 'are'} for --mode fixed; "
                         f"--mode {args.mode} draws the ways and shots of each episode itself: add --mode fixed "
                         "(with --ways, --shots and --queries), or leave them out")
    ds = open_dataset(args.dataset, args.split, root=args.pocket_root)
    if getattr(args, "verify", False) and hasattr(ds, "verify"):
        ds.verify(progress=True)
    sampler = EpisodeSampler(ds, mode=args.mode, ways=args.ways, shots=args.shots, queries=args.queries,
                             seed=args.seed)
    return ds, sampler


def _stats(args) -> int:
    from tinytrain.data import episode_stats
    ds, sampler = _sampler(args)
    sizes = ds.class_sizes()
    verified = bool(getattr(args, "verify", False) and hasattr(ds, "verify"))
    out = {"dataset": ds.name, "split": args.split, "n_classes": len(ds.classes), "n_images": ds.num_images,
           "images_per_class_min": min(sizes), "images_per_class_max": max(sizes),
           "skipped_images": int(getattr(ds, "skipped", 0)), "verified": verified,
           "ignored_metadata_files": int(getattr(ds, "ignored_metadata", 0)), "mode": args.mode, "seed": args.seed,
           "episodes": episode_stats(sampler.sample(args.episodes))}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    e = out["episodes"]
    if verified:
        checked = f"all decoded, {out['skipped_images']} unreadable skipped"
    else:
        empty = f"{out['skipped_images']} empty files skipped; " if out["skipped_images"] else ""
        checked = f"{empty}images not decoded (--verify decodes each and skips unreadable ones)"
    meta = f"; {out['ignored_metadata_files']} macOS '._' files ignored" if out["ignored_metadata_files"] else ""
    print(f"{ds.name} ({args.split}): {out['n_classes']} classes, {out['n_images']} images "
          f"({out['images_per_class_min']}-{out['images_per_class_max']} per class), {checked}{meta}")
    print(f"{e['n_episodes']} {args.mode} episodes, seed {args.seed}:   mean     sd    min    max")
    for key, label in (("ways", "ways"), ("support", "support size"), ("query", "query size"),
                       ("shots", "shots per class"), ("query_shots", "queries per class")):
        print(f"  {label:18s} {e[key + '_mean']:8.1f} {e[key + '_sd']:6.1f} {e[key + '_min']:6.0f} "
              f"{e[key + '_max']:6.0f}")
    return 0


def _episodes(args) -> int:
    from tinytrain.data import save_episode_file
    from tinytrain.deploy.outputs import atomic_file, check_output_file
    check_output_file(args.out, "--out", args.overwrite)        # before reading the dataset
    ds, sampler = _sampler(args)
    episodes = sampler.sample(args.episodes)
    with atomic_file(args.out) as tmp:
        save_episode_file(tmp, ds, episodes, split=args.split, mode=args.mode, seed=args.seed,
                          spec=args.dataset, ways=args.ways, shots=args.shots, queries=args.queries)
    print(f"wrote {len(episodes)} episodes of {ds.name} to {args.out}")
    return 0
