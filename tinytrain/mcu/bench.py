"""`tinytrain bench mcu`: the adapted sparse update as C, measured on an emulated Cortex-M7.

Exports a saved model (`tinytrain export --format c`), builds the bench program with it twice (the
machine's C compiler; arm-none-eabi-gcc for a Cortex-M7 with FPU), runs both (natively; under
`qemu-system-arm -machine mps2-an500 -icount shift=0` with semihosting) on the same images, and
reports what was measured on the emulated board beside the cost model's prediction, FullTrain's
analytic need and the PyTorch engine running the same schedule:

* RAM: .data and .bss from the ELF (the arena is a .bss symbol), the stack high-water mark (stack
  painted at reset, scanned at exit) and what malloc took from the C library (the runtime takes none);
* flash: code, constants (the frozen weights: fp32, or int8 with `--precision int8`) and .data's initial
  values, bench images excluded;
* instructions per training step and per prediction: SysTick counts under `-icount shift=0`,
  calibrated against a loop of known length; QEMU counts instructions, it models no cycles.

The library side: `measure_mcu(McuSettings(model_dir=...))` returns an `McuResult` (`.to_dict()` is the
command's `--json` object, `.table()` its text); the command line is `tinytrain.cli.bench_mcu`.
"""
from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..costs.baselines import fulltrain_plan
from ..costs.model import backward_memory, flash_constants
from ..costs.units import format_bytes
from . import build
from .export import META_FILE, CModel, prepare, write_tree
from .quant import PRECISIONS, integer_prefix
from .reference import RunResult, run_reference
from ..errors import BadInput

DEFAULT_DEVICE = "mcu-1mb"


@dataclass(frozen=True)
class McuSettings:
    """What `measure_mcu` runs (the flags of `tinytrain bench mcu`, same defaults)."""
    model_dir: str | Path                   # a model saved by `tinytrain adapt --save`
    support: str | Path | None = None       # training images DIR/<class>/<image>; None: sample photographs
    query: str | Path | None = None         # held-out images; None: the last training image of each class
    epochs: int = 1                         # passes over the training images
    precision: str = "float32"              # or "int8": the frozen prefix and every frozen weight int8
    device: str | None = DEFAULT_DEVICE     # device profile the RAM and flash are checked against; None: none
    out: str | Path | None = None           # keep the exported tree and builds here; None: a temporary folder
    timeout: float = 1800                   # seconds allowed for the emulated run


@dataclass
class BenchImages:
    source: str         # where the images came from
    train: int
    held_out: int
    epochs: int
    steps: int          # training steps: train x epochs


@dataclass
class Int8Check:
    """The int8 prefix compared bit for bit (int8 precision only)."""
    int8_layers: int
    calibration_images: int
    prefix_equal_pytorch: bool      # the host build's prefix against the PyTorch integer reference
    prefix_equal_host: bool         # the board's against the host build's


@dataclass
class DeviceFit:
    """The measured RAM and flash against a device profile."""
    device: str
    device_ram_bytes: int
    device_flash_bytes: int | None
    fits_device_ram: bool
    fits_device_flash: bool


@dataclass
class McuResult:
    """What `measure_mcu` measured on the emulated board, beside the host build, the PyTorch engine and the
    cost model."""
    model: str
    precision: str
    resolution: int
    classes: int
    optimizer: str
    lr: float
    earliest_trained_layer: int
    trained_weights: int
    images: BenchImages
    total_ram_bytes: int
    arena_bytes: int
    predicted_arena_bytes: int
    arena_over_predicted: float
    predicted_arena: dict
    data_bytes: int
    bss_bytes: int
    stack_bytes: int
    heap_bytes: int
    stack_reserved_bytes: int
    flash_bytes: int
    code_bytes: int
    constant_bytes: int
    instructions_per_step: int
    instructions_per_prediction: int
    instructions_per_tick: float
    predictions_equal_host: bool
    logits_max_rel_diff_host: float
    predictions_equal_pytorch: bool
    logits_max_rel_diff_pytorch: float
    weights_max_rel_diff_pytorch: float
    held_out_accuracy: float
    predicted_flash_constants_bytes: int
    table2_bytes: int
    fulltrain_bytes: int
    int8: Int8Check | None = None
    fit: DeviceFit | None = None

    def to_dict(self) -> dict:
        """The `--json` object: the int8 check and the device fit as top-level keys, where present."""
        out = asdict(self)
        int8, fit = out.pop("int8"), out.pop("fit")
        return out | (int8 or {}) | (fit or {})

    def table(self) -> str:
        return format_report(self.to_dict())


# ---------------------------------------------------------------------------------------------------
# Images

def _frames(paths: list[Path], resolution: int) -> np.ndarray:
    from ..data.datasets import open_rgb
    from ..data.transforms import resize_crop

    return np.stack([np.asarray(resize_crop(open_rgb(p), resolution), dtype=np.uint8) for p in paths])


def _folder(folder: str | Path, classes: list[str], flag: str) -> tuple[list[Path], list[int]]:
    """The images of a class-folder tree whose classes are among the model's, labelled by the model's order."""
    from ..data.folders import read_class_folders

    found = read_class_folders(folder, flag=flag, known=classes, known_as=f"the model's classes {classes}",
                               fix="name the class folders as the model's classes")
    return found.labelled(classes)


def bench_images(cm: CModel, support: str | None, query: str | None, workdir: Path
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train frames, train labels, held-out frames, held-out labels, where they came from)."""
    classes = cm.adapted.classes
    if support:
        paths, labels = _folder(support, classes, "--support")
        source = str(support)
    else:
        from .samples import write_samples

        n = min(len(classes), 8)
        s_dir, _ = write_samples(workdir / "samples", classes=max(2, n), support=2, query=0)
        photos, _ = _folder_any(s_dir)
        paths = photos
        labels = [i % len(classes) for i in range(len(photos))]
        source = "crops of scikit-image photographs, labelled as the model's classes in turn"
    labels = np.array(labels)
    missing = sorted(set(range(len(classes))) - set(labels.tolist()))
    if missing:
        raise BadInput(f"the training images have no image of class(es) {[classes[i] for i in missing]}; "
                         "every class needs at least one (its prototype is a class mean)")
    if query:
        qpaths, qlabels = _folder(query, classes, "--query")
        train = np.arange(len(paths))
        source += f"; held out: {query}"
    else:   # hold out the last image of each class that has two or more
        held = [max(np.flatnonzero(labels == c)) for c in range(len(classes)) if (labels == c).sum() > 1]
        if not held:
            raise BadInput("give --query DIR, or at least two training images in some class to hold one out")
        train = np.array([i for i in range(len(paths)) if i not in held])
        qpaths, qlabels = [paths[i] for i in held], labels[held].tolist()
        source += "; held out: the last image of each class"
    all_train = _frames([paths[i] for i in train], cm.network.resolution)
    return all_train, labels[train], _frames(qpaths, cm.network.resolution), np.array(qlabels), source


def _folder_any(folder: Path) -> tuple[list[Path], list[str]]:
    from ..data.folders import read_class_folders

    found = read_class_folders(folder)
    paths = [p for files in zip(*found.images.values()) for p in files]   # interleave the classes
    return paths, found.classes


# ---------------------------------------------------------------------------------------------------
# The measurement

def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the reference tensor's largest magnitude."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(float(np.abs(b).max()), 1e-30))


def measure_mcu(settings: McuSettings) -> McuResult:
    """Export, build and run the bench program on the host and the emulated board; return its figures. With
    `precision="int8"` the export is calibrated on the training images."""
    model_dir, support, query, epochs = settings.model_dir, settings.support, settings.query, settings.epochs
    device, out, timeout, precision = settings.device, settings.out, settings.timeout, settings.precision
    if epochs < 1:
        raise BadInput(f"--epochs must be >= 1 (got {epochs})")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise BadInput(f"--timeout must be a positive number of seconds (got {timeout!r}); the default is 1800")
    if precision not in PRECISIONS:
        raise BadInput(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    tools = build.require_cross_tools()
    cm = prepare(model_dir)
    if out and Path(out).is_dir() and any(Path(out).iterdir()) and not (Path(out) / "tree" / META_FILE).is_file():
        raise BadInput(f"--out {out} is a non-empty folder that holds no earlier bench; choose a new or empty one")
    with tempfile.TemporaryDirectory(prefix="tinytrain-mcu-") as tmp:
        work = Path(out) if out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, labels, test, test_labels, source = bench_images(cm, support, query, work)
        if precision == "int8":
            cm = prepare(cm.adapted, precision="int8", calibration=train)
        tree = write_tree(cm, work / "tree")
        bench_dir = work / "bench"
        bench_dir.mkdir(exist_ok=True)
        build.write_bench_data(bench_dir / "bench_data.c", train, labels, test, epochs)
        exe, _ = build.build_host(tree, bench_dir)
        host = build.parse_output(build.run_host(exe))
        elf, _ = build.build_board(tree, bench_dir, tools)
        sizes = build.elf_sizes(tools, elf)
        try:
            board_text = build.run_board(tools, elf, timeout)
        except RuntimeError as exc:    # the emulator ran past --timeout: a limit the user set, not a bug
            if "did not finish within" not in str(exc):
                raise
            raise BadInput(f"the emulated Cortex-M7 run did not finish within --timeout {timeout:g} s; raise "
                             "--timeout, or use fewer --epochs or images") from None
        board = build.parse_output(board_text)
    ref = run_reference(cm, train, labels, test, epochs)
    return report(cm, host, board, sizes, ref, device, source, len(train), len(test), epochs, test_labels, test)


def report(cm: CModel, host: build.BenchOutput, board: build.BenchOutput, sizes: build.ElfSizes,
           ref: RunResult, device: str | None, source: str, n_train: int, n_test: int, epochs: int,
           test_labels: np.ndarray, test_rgb: np.ndarray | None = None) -> McuResult:
    """The bench's figures from the two runs, the ELF and the PyTorch reference."""
    spec, plan = cm.network.spec, cm.update_plan
    ipt = board.instructions_per_tick
    arena = sizes.symbols.get("tt_arena", 0)
    if board.arena_bytes != arena:
        raise RuntimeError(f"the program reports a {board.arena_bytes} B arena but the ELF's tt_arena is {arena} B")
    data, bss = sizes.sections.get(".data", 0), sizes.sections.get(".bss", 0)
    total_ram = data + bss + max(board.stack_bytes, 0) + max(board.heap_bytes, 0)
    fulltrain = backward_memory(spec, fulltrain_plan(spec, cm.network.resolution, cm.network.optimizer, 1)).total
    int8 = fit = None
    if cm.quant is not None:
        want = integer_prefix(test_rgb, cm.quant, spec).numpy().astype(np.int8)
        int8 = Int8Check(
            int8_layers=cm.network.n_int8, calibration_images=cm.quant.calibration_images,
            prefix_equal_pytorch=all(host.prefix.get(j, np.zeros(0, np.int8)).tobytes() == want[j].tobytes()
                                     for j in range(len(want))),
            prefix_equal_host=all(np.array_equal(board.prefix.get(j), host.prefix.get(j)) for j in range(len(want))))
    if device:
        from ..costs.devices import get_device

        prof = get_device(device)
        fit = DeviceFit(device=prof.name, device_ram_bytes=prof.ram_bytes, device_flash_bytes=prof.flash_bytes,
                        fits_device_ram=total_ram <= prof.ram_bytes,
                        fits_device_flash=prof.flash_bytes is None or sizes.flash_bytes <= prof.flash_bytes)
    return McuResult(
        model=cm.adapted.model, precision=cm.precision, resolution=cm.network.resolution,
        classes=len(cm.adapted.classes),
        optimizer=cm.network.optimizer, lr=cm.lr, earliest_trained_layer=cm.network.earliest,
        trained_weights=sum(l.trained_weights for l in cm.network.layers),
        images=BenchImages(source=source, train=n_train, held_out=n_test, epochs=epochs, steps=n_train * epochs),
        total_ram_bytes=total_ram, arena_bytes=arena, predicted_arena_bytes=cm.predicted.total,
        arena_over_predicted=arena / cm.predicted.total, predicted_arena=cm.predicted.to_dict(),
        data_bytes=data, bss_bytes=bss, stack_bytes=board.stack_bytes, heap_bytes=board.heap_bytes,
        stack_reserved_bytes=sizes.sections.get(".stack", 0),
        flash_bytes=sizes.flash_bytes, code_bytes=sizes.sections.get(".text", 0),
        constant_bytes=sizes.sections.get(".rodata", 0),
        instructions_per_step=int(round(statistics.median(board.step_ticks) * ipt)),
        instructions_per_prediction=int(round(statistics.median(board.predict_ticks) * ipt)),
        instructions_per_tick=ipt,
        predictions_equal_host=bool(np.array_equal(board.predictions, host.predictions)),
        logits_max_rel_diff_host=_max_rel(board.logits, host.logits),
        predictions_equal_pytorch=bool(np.array_equal(host.predictions, ref.predictions)),
        logits_max_rel_diff_pytorch=_max_rel(host.logits, ref.logits),
        weights_max_rel_diff_pytorch=max([_max_rel(host.weights[i], w) for i, w in ref.weights.items()]
                                         + [_max_rel(host.shifts[i], s) for i, s in ref.shifts.items()]),
        held_out_accuracy=float((board.predictions == test_labels).mean()),
        predicted_flash_constants_bytes=flash_constants(spec, plan, cm.network.n_classes, cm.precision),
        table2_bytes=backward_memory(spec, plan).total,
        fulltrain_bytes=fulltrain, int8=int8, fit=fit)


def format_report(r: dict) -> str:
    """The text report of an `McuResult.to_dict()`."""
    def b(n: int) -> str:
        return f"{n:,} B ({format_bytes(n)})"

    lines = [f"{r['model']} at {r['resolution']} px ({r['precision']}), {r['classes']} classes: {r['trained_weights']:,} trained "
             f"weights from layer {r['earliest_trained_layer']} up, {r['optimizer']} lr {r['lr']:g}",
             f"images: {r['images']['train']} training x {r['images']['epochs']} epoch(s), "
             f"{r['images']['held_out']} held out ({r['images']['source']})",
             "measured on the emulated Cortex-M7 (qemu mps2-an500):",
             f"  total RAM            {b(r['total_ram_bytes'])} = .data {r['data_bytes']:,} + .bss "
             f"{r['bss_bytes']:,} + stack {r['stack_bytes']:,} + heap {r['heap_bytes']:,}",
             f"  arena (in .bss)      {b(r['arena_bytes'])}; cost model {b(r['predicted_arena_bytes'])} "
             f"({100 * (r['arena_over_predicted'] - 1):+.1f} %)",
             f"  flash                {b(r['flash_bytes'])} (code {r['code_bytes']:,}, constants "
             f"{r['constant_bytes']:,})",
             f"  instructions         {r['instructions_per_step']:,} per training step, "
             f"{r['instructions_per_prediction']:,} per prediction (QEMU -icount: instructions, not cycles)",
             f"  predictions          {'equal to' if r['predictions_equal_host'] else 'DIFFERENT from'} the host "
             f"build's (logits within {r['logits_max_rel_diff_host']:.1e} relative); held-out accuracy "
             f"{100 * r['held_out_accuracy']:.0f} %",
             f"host build vs PyTorch engine, same schedule: predictions "
             f"{'equal' if r['predictions_equal_pytorch'] else 'DIFFERENT'}, logits within "
             f"{r['logits_max_rel_diff_pytorch']:.1e}, trained slices within {r['weights_max_rel_diff_pytorch']:.1e} "
             f"relative",
             *([f"int8 prefix (layers 0-{r['int8_layers'] - 1}, calibrated on {r['calibration_images']} images): "
                f"host {'EQUAL' if r['prefix_equal_pytorch'] else 'NOT equal'} to the PyTorch integer reference, board "
                f"{'equal' if r['prefix_equal_host'] else 'DIFFERENT'} to the host (bit for bit)"] if 'int8_layers' in r
               else []),
             f"analytic: Table-2 memory of this plan {b(r['table2_bytes'])}; FullTrain at batch 1 "
             f"{b(r['fulltrain_bytes'])}"]
    if "device" in r:
        lines.append(f"{r['device']}: RAM {format_bytes(r['device_ram_bytes'])} -> "
                     f"{'fits' if r['fits_device_ram'] else 'does NOT fit'}; flash "
                     f"{format_bytes(r['device_flash_bytes']) if r['device_flash_bytes'] else 'n/a'} -> "
                     f"{'fits' if r['fits_device_flash'] else 'does NOT fit'}")
    return "\n".join(lines)
