"""Knowledge distillation from an ImageNet teacher on augmented patches of a few photographs.

The tiny backbones have no ImageNet weights on this machine, and the offline stage's glyph source
teaches them nothing about natural images. Asano & Saeed (ICLR 2023, "The augmented image prior")
showed that a student trained from scratch only on heavily augmented patches of one or a few photos,
to match a pretrained teacher's softened ImageNet outputs, learns much of what the teacher knows. This
stage does that: the student gets a 1000-way classifier for the KL loss (dropped afterwards), teacher and
student see the same CutMixed patch batch ("function matching"), and the curve of student-teacher
agreement on crops of held-out photographs is logged as it trains. Optionally a share of each batch
comes from the pocket source (glyphs), so the student also keeps the features few-shot targets of that
kind need. Same run-folder semantics as pretraining: resumable, a changed config is refused.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.backbone import Backbone
from ..models.weights import save_checkpoint
from .episodes import episode_seed, seeded_rng
from .loop import Stage, TrainResult, train_loop
from .rundir import RunConfig, RunDir
from ..errors import BadInput

IMAGENET_CLASSES = 1000


@dataclass
class DistillConfig(RunConfig):
    student: str = "mcunet-5fps"
    init: str = "random"                  # student's starting weights: random, a shipped name or a path
    teacher: str = "mobilenetv2-1.0"
    teacher_checkpoint: str = "imagenet"
    images: list = field(default_factory=list)         # resolved photographs: [{file, sha256, source, licence}]
    heldout: list = field(default_factory=list)        # photographs for the agreement curve (never trained on)
    resolution: int = 128
    batch_size: int = 64
    epochs: int = 40
    steps_per_epoch: int = 500
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    temperature: float = 8.0
    feature_weight: float = 0.0           # weight of the feature term: 1 - cos(P s, t) of pooled features
    cutmix: float = 1.0                   # probability that a batch is CutMixed
    pocket_fraction: float = 0.0          # share of each batch drawn from the pocket source's training glyphs
    pocket_loss: str = "ce"               # ce: glyphs learn their own labels (a glyph classifier); kl: the teacher's
    pocket_data: str = "pocket-symbols"     # the pocket benchmark's source domain (data.pocket.POCKET_SOURCE)
    data_version: str = ""
    init_crop: float = 0.5
    min_area: float = 0.002
    rotation: float = 30.0
    shear: float = 30.0
    heldout_crops: int = 500
    seed: int = 0
    save_every_steps: int = 100
    log_every_steps: int = 20
    device: str = "auto"
    nproc: int = 1
    lite_residual: bool = False           # train only TinyTL lite-residual branches on the frozen --init student

    def check(self) -> None:
        self.check_numbers()
        if self.lite_residual and self.init == "random":
            raise BadInput("--lite-residual trains branches beside a trained backbone, which stays frozen; pass "
                             "--init the distill run's last.safetensors (the student with its ImageNet classifier)")
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 2:
            raise BadInput("--epochs and --steps-per-epoch must be at least 1 and --batch-size at least 2")
        if self.resolution < 32 or self.resolution % 8:
            raise BadInput(f"--resolution {self.resolution}: the students downsample 32x, so use a multiple of 8 "
                             "that is at least 32 (the paper's is 128)")
        if self.temperature <= 0:
            raise BadInput(f"--temperature must be positive, got {self.temperature}")
        if self.feature_weight < 0:
            raise BadInput(f"--feature-weight must be >= 0, got {self.feature_weight}")
        if not 0 <= self.cutmix <= 1 or not 0 <= self.pocket_fraction < 1:
            raise BadInput("--cutmix must be in [0, 1] and --pocket-fraction in [0, 1)")
        if self.pocket_loss not in ("ce", "kl"):
            raise BadInput(f"--pocket-loss must be ce or kl, got {self.pocket_loss!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise BadInput(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if self.batch_size % self.nproc or self.pocket_per_batch % self.nproc:
            raise BadInput(f"--batch-size ({self.batch_size}) and its glyph share ({self.pocket_per_batch}) must be "
                             f"multiples of --nproc ({self.nproc})")
        if not self.images:
            raise BadInput("--images gave no photograph")
        train = {i["sha256"] for i in self.images}
        if any(h["sha256"] in train for h in self.heldout):
            raise BadInput("a --heldout photograph is also a training image; the agreement check needs photos "
                             "never trained on")

    @property
    def pocket_per_batch(self) -> int:
        return int(round(self.batch_size * self.pocket_fraction))

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


# --- the teacher and the student --------------------------------------------------------------------

def load_teacher(model: str, checkpoint: str) -> Backbone:
    """An ImageNet classifier (1000 outputs), frozen; anything else is refused."""
    from ..models.weights import load_backbone
    teacher = load_backbone(model, checkpoint)
    if teacher.classifier is None or teacher.classifier.out_features != IMAGENET_CLASSES:
        have = "no classifier" if teacher.classifier is None else f"{teacher.classifier.out_features} classes"
        raise BadInput(f"--teacher {model} --teacher-checkpoint {checkpoint} is not an ImageNet classifier ({have}); "
                         "use --teacher mobilenetv2-1.0 --teacher-checkpoint imagenet")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def initial_student(model: str, init: str, lite_residual_at: int | None = None) -> Backbone:
    """The student with a fresh 1000-way classifier; `init` (random, a shipped name or a path) gives its
    features. A checkpoint of another model is refused by `models.weights.load_backbone`.

    With `lite_residual_at` (a resolution) the student is `init` as it is, ImageNet classifier included, with
    TinyTL's lite-residual branches for that size added (each starts as a no-op): TinyTL pretrains its branches
    on ImageNet with the backbone frozen; here they learn to match the teacher through the student's own head."""
    from ..models.backbone import Backbone as _Backbone
    from ..models.weights import load_backbone
    base = load_backbone(model, init)
    if lite_residual_at:
        from ..models.tinytl import TinyTLBackbone
        if base.classifier is None or base.classifier.out_features != IMAGENET_CLASSES:
            raise BadInput(f"--lite-residual: --init {init} has no ImageNet classifier to match the teacher "
                             "through; pass the distill run's last.safetensors, not the exported features")
        return TinyTLBackbone.from_backbone(base, lite_residual_at)
    student = _Backbone(base.spec, IMAGENET_CLASSES)
    own = student.state_dict()
    own.update({k: v for k, v in base.state_dict().items() if not k.startswith("classifier.")})
    student.load_state_dict(own)
    return student


# --- held-out agreement -----------------------------------------------------------------------------

@dataclass
class Agreement:
    top1: float           # the student's arg-max equals the teacher's
    top5_overlap: float   # |student top-5 ∩ teacher top-5| / 5
    teacher_in_top5: float  # the teacher's arg-max is among the student's top 5
    n: int

    def to_dict(self) -> dict:
        return {"agree_top1": self.top1, "agree_top5_overlap": self.top5_overlap,
                "teacher_in_top5": self.teacher_in_top5, "agree_n": self.n}


def heldout_crops(photos, resolution: int, n: int, seed: int) -> torch.Tensor:
    """`n` fixed crops of the held-out photos (area 2-100 %, no rotation or colour change), normalised."""
    from ..data.transforms import TrainTransform
    tf = TrainTransform(resolution, scale=(0.02, 1.0), jitter=0.0, flip=False, seed=seed)
    return torch.stack([tf(photos[i % len(photos)]) for i in range(n)])


@torch.no_grad()
def agreement(student: Backbone, teacher_logits: torch.Tensor, crops: torch.Tensor, batch: int = 100) -> Agreement:
    was = student.training
    student.eval()
    device = next(student.parameters()).device
    s = torch.cat([student.logits(crops[i:i + batch].to(device)).cpu() for i in range(0, len(crops), batch)])
    student.train(was)
    s5, t5 = s.topk(5, -1).indices, teacher_logits.topk(5, -1).indices
    overlap = (s5.unsqueeze(-1) == t5.unsqueeze(-2)).any(-1).float().sum(-1) / 5
    return Agreement(float((s5[:, 0] == t5[:, 0]).float().mean()), float(overlap.mean()),
                     float((s5 == t5[:, :1]).any(-1).float().mean()), len(crops))


def plot_curve(records: list[dict], path: Path, title: str) -> None:
    """Agreement against images seen: the curve that says whether more compute would pay."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [r for r in records if "agree_top1" in r]
    if not recs:
        return
    x = [r["images_seen"] for r in recs]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(x, [100 * r["agree_top1"] for r in recs], "o-", label="top-1 agreement")
    ax.plot(x, [100 * r["agree_top5_overlap"] for r in recs], "s-", label="top-5 overlap")
    ax.plot(x, [100 * r["teacher_in_top5"] for r in recs], "^-", label="teacher's top-1 in student's top-5")
    ax.set_xlabel("images seen")
    ax.set_ylabel("% of held-out crops")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# --- the loop ---------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the softened distributions, averaged over the batch and scaled by T^2
    (Hinton et al.), so that its gradients keep their size beside another loss term at any temperature."""
    return temperature ** 2 * F.kl_div(F.log_softmax(student_logits / temperature, -1),
                                       F.softmax(teacher_logits / temperature, -1), reduction="batchmean")


def feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, projector: torch.nn.Module):
    """1 - cosine similarity between the projected student feature and the teacher's pooled feature: the
    embedding the few-shot head compares, matched directly (an option beside the KL on logits)."""
    return (1 - F.cosine_similarity(projector(student_features), teacher_features, dim=-1)).mean()


class BatchSource:
    """Batch `step` of a run: photo patches (and pocket glyphs), CutMixed; a pure function of (seed, step),
    so a resumed or distributed run sees exactly the batches an uninterrupted single process sees.

    `batch(step)` returns the part the teacher labels (photos, and glyphs with pocket_loss "kl") and, with
    pocket_loss "ce", the glyphs with their class labels (never CutMixed: their labels are not mixed)."""

    def __init__(self, config: DistillConfig, photos, pocket=None):
        from ..data.transforms import PhotoPatches
        self.config = config
        self.patches = PhotoPatches(photos, config.resolution, init_crop=config.init_crop,
                                    min_area=config.min_area, rotation=config.rotation, shear=config.shear)
        self.pocket = pocket

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(teacher-labelled images, glyph images, glyph labels); the last two are empty without "ce" glyphs."""
        from ..data.transforms import cutmix
        c = self.config
        self.patches.reseed(episode_seed(c.seed, step))
        n_pocket = c.pocket_per_batch if self.pocket is not None else 0
        x = self.patches(c.batch_size - n_pocket)
        gx = torch.zeros(0, *x.shape[1:])
        gy = torch.zeros(0, dtype=torch.long)
        if n_pocket:
            gx, gy = self.pocket(step, n_pocket)
            if c.pocket_loss == "kl":
                x, gx, gy = torch.cat([x, gx]), gx[:0], gy[:0]
        g = torch.Generator().manual_seed(episode_seed(c.seed + 1, step))
        x = x[torch.randperm(len(x), generator=g)]
        if float(torch.rand((), generator=g)) < c.cutmix:
            x = cutmix(x, g)
        return x, gx, gy


class PocketGlyphs:
    """`n` augmented training images of the pocket source for batch `step` (seeded per step)."""

    def __init__(self, spec: str, resolution: int, seed: int):
        from ..data import ClassificationView
        from .episodes import ReseedableTransform, open_source_splits
        train, _ = open_source_splits(spec)
        self.tf = ReseedableTransform(resolution, flip=False, crop_scale=0.35)
        self.view = ClassificationView(train, self.tf)
        self.seed = seed

    @property
    def num_classes(self) -> int:
        return self.view.num_classes

    def __call__(self, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, class labels) of `n` glyphs."""
        g = torch.Generator().manual_seed(episode_seed(self.seed + 2, step))
        idx = torch.randint(len(self.view), (n,), generator=g).tolist()
        self.tf.reseed(episode_seed(self.seed + 3, step))
        with seeded_rng(episode_seed(self.seed + 4, step)):
            items = [self.view[i] for i in idx]
        return torch.stack([it[0] for it in items]), torch.tensor([int(it[1]) for it in items])


class _Distillation(Stage):
    """The student matches the teacher on `batches.batch(step)`, each rank on its slice of every batch; BN
    statistics are those of the slice (as with any data-parallel training), averaged after each step."""

    name = "distill"
    keeps_best = False
    optional = ("projector", "glyph_head")      # states written before these existed
    unit = "img"

    def __init__(self, student: Backbone, teacher: Backbone, batches: BatchSource, config: DistillConfig, heldout):
        super().__init__(config, f"distill {config.student}")
        self.student = student.to(self.device).to(memory_format=torch.channels_last)
        self.teacher = teacher.to(self.device).to(memory_format=torch.channels_last)
        if config.lite_residual:
            _train_only_branches(student)
        self.projector = torch.nn.Linear(student.feature_dim, teacher.feature_dim).to(self.device)
        glyphs = batches.pocket is not None and config.pocket_loss == "ce"
        self.glyph_classes = batches.pocket.num_classes if glyphs else 0
        self.glyph_head = torch.nn.Linear(student.feature_dim, max(self.glyph_classes, 1)).to(self.device)
        self.params = ([p for p in student.parameters() if p.requires_grad]
                       + (list(self.projector.parameters()) if config.feature_weight > 0 else [])
                       + (list(self.glyph_head.parameters()) if self.glyph_classes else []))
        self.opt = torch.optim.AdamW([{"params": [p for p in self.params if p.dim() > 1],
                                       "weight_decay": config.weight_decay},
                                      {"params": [p for p in self.params if p.dim() <= 1], "weight_decay": 0.0}],
                                     lr=config.lr)
        self.modules = {"student": student, "projector": self.projector, "glyph_head": self.glyph_head}
        self.averaged = student
        self.steps_per_epoch, self.unit_size = config.steps_per_epoch, config.batch_size
        self.batches, self.heldout, self.crops, self.t_logits = batches, heldout, None, None

    def slice(self, step: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """This rank's share of batch `step`: (images, how many of them the teacher labels, glyph labels)."""
        rank, world = self.rank, self.world
        xk, gx, gy = self.batches.batch(step)
        sk, sg = len(xk) // world, len(gx) // world           # each rank's slice of each part
        xk = xk[rank * sk:(rank + 1) * sk]
        gx, gy = gx[rank * sg:(rank + 1) * sg], gy[rank * sg:(rank + 1) * sg].to(self.device)
        return torch.cat([xk, gx]).to(self.device, memory_format=torch.channels_last), sk, gy

    def backward(self, step: int) -> torch.Tensor:
        c = self.config
        x, sk, gy = self.slice(step)
        with torch.no_grad():
            t_feat = self.teacher(x[:sk])
            t = self.teacher.classifier(t_feat)
        _training_mode(self.student, c.lite_residual)
        s_feat = self.student(x)                               # one forward: BN sees photos and glyphs together
        s = self.student.classifier(s_feat[:sk])
        loss = kd_loss(s, t, c.temperature)
        if c.feature_weight > 0:
            loss = loss + c.feature_weight * feature_loss(s_feat[:sk], t_feat, self.projector)
        glyph_acc = 0.0
        if len(gy):
            g_logits = self.glyph_head(s_feat[sk:])
            loss = loss + F.cross_entropy(g_logits, gy, label_smoothing=0.1)
            glyph_acc = float((g_logits.argmax(-1) == gy).float().mean())
        (loss / self.world).backward()
        return torch.tensor([loss.item(), float((s.argmax(-1) == t.argmax(-1)).float().mean()), 1.0, glyph_acc])

    def postfix(self, stats: torch.Tensor, lr: float) -> dict:
        return {"loss": f"{stats[0] / stats[2]:.4f}", "agree": f"{stats[1] / stats[2]:.2f}", "lr": f"{lr:.2g}"}

    def log_fields(self, win: torch.Tensor, seconds: float) -> dict:
        steps = float(win[2]) / self.world                     # win[2] counts ranks' steps
        rec = {"train_agree_top1": float(win[1] / win[2]),
               "images_per_s": self.config.batch_size * steps / max(seconds, 1e-9)}
        if self.glyph_classes:
            rec["train_glyph_acc"] = float(win[3] / win[2])
        return rec

    def record(self, step: int) -> dict:
        """Images seen and the held-out agreement with the teacher (on fixed crops, made once)."""
        c = self.config
        if self.heldout is not None and self.crops is None:
            self.crops = heldout_crops(self.heldout, c.resolution, c.heldout_crops, c.seed + 99)
            with torch.no_grad():
                self.t_logits = torch.cat([self.teacher.logits(self.crops[i:i + 100].to(self.device)).cpu()
                                           for i in range(0, len(self.crops), 100)])
        rec = {"step": step, "epoch": step / self.steps_per_epoch, "images_seen": step * c.batch_size,
               "time": time.time()}
        if self.crops is not None:
            rec |= agreement(self.student, self.t_logits, self.crops).to_dict()
        return rec

    def keep(self, run: RunDir, history: list[dict], best: float | None) -> None:
        """last.safetensors, a snapshot per epoch (snapshots/step-N) and the agreement curve."""
        c, rec = self.config, history[-1]
        meta = self.checkpoint_meta(rec, images_seen=rec["images_seen"], resolution=c.resolution)
        save_checkpoint(run.last_path, self.student, meta | {k: v for k, v in rec.items() if k.startswith("agree")})
        save_checkpoint(run.path / "snapshots" / f"step-{rec['step']:07d}.safetensors", self.student.cpu(), meta | rec)
        self.student.to(self.device)
        plot_curve(history, run.path / "agreement.png",
                   f"{c.student} <- {c.teacher}, {c.resolution} px, held-out crops")


def distill(student: Backbone, teacher: Backbone, batches: BatchSource, config: DistillConfig, out: str | Path,
            *, heldout=None, restart: bool = False, stop_at_step: int | None = None,
            progress: bool = True) -> TrainResult:
    """Train `student` (with its 1000-way classifier) in place to match `teacher`; resumable.

    In a distributed run each rank computes its slice of every batch and gradients are all-reduced; BN
    statistics are those of the slice (as with any data-parallel training) and averaged after each step.
    The result's best_val is the latest held-out top-1 agreement."""
    # KL at a high temperature gives tiny gradients; once Adam's second moments and the weights' small parts
    # fall into the denormal range a CPU step became ~20x slower (measured here); flush them to zero while
    # distilling, and only then: the flag is process-wide (it broke float arithmetic of whatever ran next)
    torch.set_flush_denormal(True)
    try:
        config.check()
        stage = _Distillation(student, teacher, batches, config, heldout)
        result = train_loop(stage, out, restart=restart, stop_at_step=stop_at_step, progress=progress)
    finally:
        torch.set_flush_denormal(False)
    last = result.history[-1] if result.history else {}
    return replace(result, best_val=last.get("agree_top1"))


def _train_only_branches(student: Backbone) -> None:
    """Lite-residual pretraining: only the student's TinyTL branches train; the rest stays as it is."""
    if not hasattr(student, "lite"):
        raise BadInput("lite_residual needs a student with lite-residual branches (initial_student(..., "
                         "lite_residual_at=resolution))")
    for p in student.parameters():
        p.requires_grad_(False)
    for p in student.lite.parameters():
        p.requires_grad_(True)


def _training_mode(student: Backbone, lite_only: bool) -> None:
    """Train mode for what trains: the whole student, or (lite-residual pretraining) only the branches, whose
    BN statistics are estimated here and then stay frozen online; the backbone keeps its statistics."""
    if lite_only:
        student.eval()
        student.lite.train()
    else:
        student.train()


def export_features(run_dir: str | Path, out: str | Path, name: str = "distilled") -> Path:
    """The run's final student without its ImageNet classifier: the backbone the online stage uses (with
    its lite-residual branches under `lite.*` when the run trained them)."""
    from ..models.weights import load_checkpoint
    from .metatrain import strip_classifier
    student, meta = load_checkpoint(Path(run_dir) / "last.safetensors")
    return save_checkpoint(out, strip_classifier(student), meta | {"shipped_as": name})


def photo_files(entries: list, flag: str) -> list[Path]:
    """The files a config's `images`/`heldout` name, each checked to be the photograph the run recorded (by its
    sha256): a resumed or reproduced run never trains on a file that changed since."""
    from ..data.photos import resolve_images, sha256_file
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("source"), str)
                                                and isinstance(e.get("sha256"), str) for e in entries):
        raise BadInput(f"the run config's {flag[2:]} must be a list of {{\"source\": ..., \"sha256\": ...}} as a "
                       "distill run writes it")
    files = []
    for e in entries:
        found = resolve_images([e["source"]], flag)
        if len(found) != 1 or sha256_file(found[0]) != e["sha256"]:
            raise BadInput(f"{flag[2:]} {e['source']} is not the photograph the run used (its sha256 differs); "
                           "restore that file, or start a new run (another --out)")
        files += found
    return files


def run_distill(config: DistillConfig, out: str | Path, *, restart: bool = False, stop_at_step: int | None = None,
                progress: bool = True) -> TrainResult:
    """Build teacher, student and data named by `config` (whose `images`/`heldout` were resolved by the
    caller from file names) and distil. Every input is checked before the run folder is touched."""
    from ..data.photos import load_photos
    config.check()
    photos = load_photos(photo_files(config.images, "--images"))
    held = load_photos(photo_files(config.heldout, "--heldout")) if config.heldout else None
    teacher = load_teacher(config.teacher, config.teacher_checkpoint)
    torch.manual_seed(config.seed)
    student = initial_student(config.student, config.init, config.resolution if config.lite_residual else None)
    pocket = PocketGlyphs(config.pocket_data, config.resolution, config.seed) if config.pocket_fraction > 0 else None
    batches = BatchSource(config, photos, pocket)
    return distill(student, teacher, batches, config, out, heldout=held, restart=restart,
                   stop_at_step=stop_at_step, progress=progress)
