"""Device profiles: a target turned into a memory budget, a compute budget, and what counts in memory.

The built-in table is `devices.json` beside this file. Users extend or override it with their own JSON
file of the same shape, passed explicitly (`extra_file=`, CLI `--devices-file`) or named by the
environment variable TINYTRAIN_DEVICES (several files separated by the OS path separator). A later
entry with the same name replaces an earlier one.

What counts (paper_spec 5.4): on an MCU the frozen weights live in flash, so RAM must hold only the
backward-pass memory of the paper's Table 2, and the whole model (at `frozen_weight_bits`) must fit in
flash. On a Linux board every weight is in RAM too (the paper's Table 8 view).

Time and energy (`estimate_adaptation`): a profile may carry `train_macs_per_second` (the throughput
one adaptation's conv MACs run at on the device) and `power_watts` (its average draw while adapting),
both calibrated from the paper's own measurements (paper_spec 9.5: Table 9 and Fig. 5 on a Raspberry Pi
Zero 2, Table 10 on a Jetson Nano; `calibrate`). An estimate is MACs of the adaptation (`adaptation_macs`)
divided by the throughput, times the power; a profile without the fields plans as before and says the
estimate is unavailable.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ..models.specs import ArchSpec, conv_layers, get_spec
from .model import CostModel
from .plan import UpdatePlan
from .units import format_bytes, parse_bytes
from ..errors import BadInput

ENV_VAR = "TINYTRAIN_DEVICES"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    ram_bytes: int
    flash_bytes: int | None
    memory_budget_bytes: int
    compute_budget: float            # fraction of FullTrain's backward MACs
    frozen_weights_in_flash: bool
    frozen_weight_bits: int = 32
    frozen_activation_bits: int = 32             # 8: the frozen prefix runs in int8 (export --precision int8)
    batch_size: int = 1
    cores: int | None = None
    notes: str = ""
    train_macs_per_second: float | None = None   # adaptation throughput (calibrated; see `calibrate`)
    power_watts: float | None = None             # average power while adapting
    estimate_basis: str = ""                     # where the two figures come from

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict, source: str = "device file") -> "DeviceProfile":
        """From a JSON entry; sizes may be strings like '320KB' (keys ram/flash/memory_budget or *_bytes).
        Every field is checked (type and range); a ValueError names the file, the device and the field."""
        if not isinstance(d, dict):
            raise BadInput(f"{source}: every device entry must be a JSON object such as {{\"name\": \"my-board\", "
                             f"\"ram\": \"1MB\"}}, not {json.dumps(d)[:40]}")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadInput(f"{source}: every device entry needs a 'name' that is a non-empty string "
                             f"(got {json.dumps(name)[:40]})")
        where = f"{source}: device {name!r}"

        def size(key: str, required: bool = True) -> int | None:
            field_name = f"{key}_bytes" if f"{key}_bytes" in d else key
            value = d.get(field_name)
            if value is None:
                if required:
                    raise BadInput(f"{where} lacks {key!r}; give e.g. \"{key}\": \"1MB\"")
                return None
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise BadInput(f"{where}: {field_name} must be a size such as \"1MB\" or a byte count "
                                 f"(got {json.dumps(value)[:40]})")
            try:
                n = parse_bytes(value)
            except ValueError as exc:
                raise BadInput(f"{where}: {field_name}: {exc}") from None
            if n <= 0:
                hint = "; leave it out to budget the whole RAM" if key == "memory_budget" else ""
                raise BadInput(f"{where}: {field_name} must be positive (got {value!r}){hint}")
            return n

        def number(key: str, default=None, kind=float):
            value = d.get(key)
            value = default if value is None else value       # null = not given: the documented default
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind is int and isinstance(value, float) and not value.is_integer()) or not math.isfinite(value):
                what = "a whole number" if kind is int else "a number"
                raise BadInput(f"{where}: {key} must be {what} (got {json.dumps(value)[:40]})")
            return kind(value)

        def text(key: str) -> str:
            value = d.get(key, "")
            if not isinstance(value, str):
                raise BadInput(f"{where}: {key} must be a string (got {json.dumps(value)[:40]})")
            return value

        def positive(key: str) -> float | None:
            value = number(key)
            if value is not None and not value > 0:
                raise BadInput(f"{where}: {key} must be positive (got {value})")
            return value

        ram = size("ram")
        budget = size("memory_budget", required=False)
        budget = ram if budget is None else budget       # left out: the whole RAM; 0 is refused, never read as RAM
        if budget > ram:
            raise BadInput(f"{where}: memory_budget ({format_bytes(budget)}) is more than its ram "
                             f"({format_bytes(ram)}); lower it or raise ram")
        compute = number("compute_budget", 0.15)
        if not 0 < compute <= 1:
            raise BadInput(f"{where}: compute_budget is a fraction of FullTrain's backward MACs "
                             f"in (0, 1] (got {compute})")
        bits = number("frozen_weight_bits", 32, int)
        if bits not in (8, 16, 32):
            raise BadInput(f"{where}: frozen_weight_bits must be 8, 16 or 32 (got {bits})")
        act_bits = number("frozen_activation_bits", 32, int)
        if act_bits not in (8, 32):
            raise BadInput(f"{where}: frozen_activation_bits must be 8 (an int8 frozen prefix) or 32 (got {act_bits})")
        in_flash = d.get("frozen_weights_in_flash", False)
        if not isinstance(in_flash, bool):
            raise BadInput(f"{where}: frozen_weights_in_flash must be true or false (got {json.dumps(in_flash)[:40]})")
        batch = number("batch_size", 1, int)
        if batch < 1:
            raise BadInput(f"{where}: batch_size must be at least 1 (got {batch})")
        cores = number("cores", None, int)
        if cores is not None and cores < 1:
            raise BadInput(f"{where}: cores must be at least 1 (got {cores})")

        return DeviceProfile(
            name=name, description=text("description"), ram_bytes=ram, flash_bytes=size("flash", False),
            memory_budget_bytes=budget, compute_budget=compute,
            frozen_weights_in_flash=in_flash, frozen_weight_bits=bits, frozen_activation_bits=act_bits,
            batch_size=batch, cores=cores, notes=text("notes"),
            train_macs_per_second=positive("train_macs_per_second"), power_watts=positive("power_watts"),
            estimate_basis=text("estimate_basis"),
        )


def _read_table(text: str, source: str) -> list[DeviceProfile]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"device file {source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadInput(f"device file {source} is nested too deeply to be a device table") from None
    entries = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise BadInput(f"device file {source} must hold a list of devices or {{\"devices\": [...]}}")
    return [DeviceProfile.from_dict(e, f"device file {source}") for e in entries]


def _sources(extra_file: str | Path | None) -> list[Path]:
    paths = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if extra_file:
        paths.append(Path(extra_file))
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"device file {p} does not exist (check --devices-file or ${ENV_VAR})")
    return paths


def load_devices(extra_file: str | Path | None = None) -> dict[str, DeviceProfile]:
    """Built-in profiles, then those of $TINYTRAIN_DEVICES, then `extra_file` (later names override)."""
    builtin = resources.files("tinytrain.costs").joinpath("devices.json").read_text()
    table = {d.name: d for d in _read_table(builtin, "devices.json (built in)")}
    for path in _sources(extra_file):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"device file {path} is not a text (JSON) file; check --devices-file or ${ENV_VAR}") from None
        table.update({d.name: d for d in _read_table(text, str(path))})
    return table


def list_devices(extra_file: str | Path | None = None) -> list[DeviceProfile]:
    return list(load_devices(extra_file).values())


def get_device(name: str, extra_file: str | Path | None = None) -> DeviceProfile:
    table = load_devices(extra_file)
    if name not in table:
        raise BadInput(f"unknown device {name!r}; choose one of {', '.join(table)} or add it to a JSON file named by "
                       f"${ENV_VAR} (or by --devices-file, for the commands that take it: plan, devices, profile)")
    return table[name]


def model_weight_bytes(spec: ArchSpec, bits: int = 32) -> int:
    """Bytes of every backbone parameter (conv + BN) at `bits` per value."""
    return CostModel(spec).all_weights_bytes() * bits // 32


def precision_of(device: DeviceProfile | None) -> str:
    """The precision a device's plans are priced at: "int8" where its frozen activations are 8-bit (the
    C runtime's `--precision int8`), else "float32"."""
    return "int8" if device is not None and device.frozen_activation_bits == 8 else "float32"


def cost_model(spec: ArchSpec, resolution: int, device: DeviceProfile | None = None) -> CostModel:
    """The cost model a plan for `device` is priced with (int8 frozen activations where it has them)."""
    return CostModel(spec, resolution, precision_of(device))


def memory_needed(spec: ArchSpec, plan: UpdatePlan, device: DeviceProfile) -> int:
    """RAM the plan needs on `device`: Table-2 backward memory (its frozen prefix's activations in int8
    where the device runs them so), plus all weights on a Linux board (Table 8)."""
    model = cost_model(spec, plan.resolution, device)
    need = model.backward_memory(plan).total
    if not device.frozen_weights_in_flash:
        need += model.all_weights_bytes()
    return need


def cheapest_plan(spec: ArchSpec, resolution: int, optimizer: str = "adam") -> UpdatePlan:
    """The least memory any sparse plan needs: the last layer's BN shift alone."""
    last = len(conv_layers(spec, resolution)) - 1
    return UpdatePlan(spec.name, [], [last], 1, optimizer, "sparse", resolution)


def largest_fitting_resolution(spec: ArchSpec, device: DeviceProfile, below: int, optimizer: str = "adam",
                               step: int = 8, smallest: int = 8) -> int | None:
    """The largest resolution under `below` (a multiple of `step`) at which the cheapest sparse plan fits
    `device`'s memory budget, or None down to `smallest` px: what to say when a plan does not fit."""
    r = (below - 1) // step * step
    while r >= smallest:
        if memory_needed(spec, cheapest_plan(spec, r, optimizer), device) <= device.memory_budget_bytes:
            return r
        r -= step
    return None


def resolution_advice(spec: ArchSpec, device: DeviceProfile, resolution: int, optimizer: str = "adam") -> str:
    """One sentence for a plan that does not fit `device` at `resolution`: the largest resolution at which
    any plan does, or that none does."""
    from .units import format_bytes

    floor = memory_needed(spec, cheapest_plan(spec, resolution, optimizer), device)
    budget = format_bytes(device.memory_budget_bytes)
    if floor <= device.memory_budget_bytes:
        return (f"at {resolution} px a plan fits {device.name} if it trains less (the cheapest, one BN shift, needs "
                f"{format_bytes(floor)} of its {budget} budget)")
    best = largest_fitting_resolution(spec, device, resolution, optimizer)
    why = f"at {resolution} px even the cheapest plan (one BN shift) needs {format_bytes(floor)} of {device.name}'s {budget} budget"
    if best is None:
        return f"{why}; no --resolution from 8 px up fits {device.name}: choose a device with more RAM"
    return f"{why}; the largest resolution that fits {device.name} is {best} px: adapt with --resolution {best}"


@dataclass(frozen=True)
class DeviceFit:
    """Whether a plan fits a device, with the figures behind the answer."""

    device: str
    memory_needed_bytes: int
    memory_budget_bytes: int
    backward_macs: int
    compute_budget_macs: int
    flash_needed_bytes: int | None
    flash_bytes: int | None

    @property
    def fits_memory(self) -> bool:
        return self.memory_needed_bytes <= self.memory_budget_bytes

    @property
    def fits_flash(self) -> bool:
        return self.flash_needed_bytes is None or self.flash_bytes is None or \
            self.flash_needed_bytes <= self.flash_bytes

    @property
    def fits_compute(self) -> bool:
        return self.backward_macs <= self.compute_budget_macs

    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_flash and self.fits_compute

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(fits=self.fits, fits_memory=self.fits_memory, fits_flash=self.fits_flash,
                 fits_compute=self.fits_compute)
        return d


def check_fit(spec: ArchSpec, plan: UpdatePlan, device: DeviceProfile) -> DeviceFit:
    """Memory, flash and compute of `plan` against `device`'s budgets."""
    model = CostModel(spec, plan.resolution)
    flash_need = model_weight_bytes(spec, device.frozen_weight_bits) if device.frozen_weights_in_flash else None
    return DeviceFit(device.name, memory_needed(spec, plan, device), device.memory_budget_bytes,
                     model.backward_macs(plan), int(device.compute_budget * 2 * model.forward_macs),
                     flash_need, device.flash_bytes)


# --------------------------------------------------------------------------------------------
# Time and energy of one adaptation

# paper_spec 9.5. Table 9 (Raspberry Pi Zero 2) and Table 10 (Jetson Nano): (Fisher pass s, run time s) of
# one adaptation, 40 iterations on 25 images, per model and method.
PAPER_END_TO_END = {
    "pi-zero-2": {("mcunet-5fps", "sparseupdate"): (0.0, 607), ("mcunet-5fps", "tinytrain"): (18.7, 526),
                  ("mbv2-w0.35", "sparseupdate"): (0.0, 611), ("mbv2-w0.35", "tinytrain"): (20.1, 536),
                  ("proxyless-w0.3", "sparseupdate"): (0.0, 645), ("proxyless-w0.3", "tinytrain"): (22.6, 575)},
    "jetson-nano": {("mcunet-5fps", "sparseupdate"): (0.0, 1189), ("mcunet-5fps", "tinytrain"): (35.0, 892),
                    ("mbv2-w0.35", "sparseupdate"): (0.0, 1282), ("mbv2-w0.35", "tinytrain"): (32.2, 815),
                    ("proxyless-w0.3", "sparseupdate"): (0.0, 1517), ("proxyless-w0.3", "tinytrain"): (26.8, 869)},
}
# Fig. 5 (Pi Zero 2): (end-to-end minutes, energy kJ) of every method.
PAPER_FIG5 = {
    ("mcunet-5fps", "fulltrain"): (90, 4.4), ("mcunet-5fps", "lastlayer"): (8, 1.0),
    ("mcunet-5fps", "tinytl"): (47, 2.3), ("mcunet-5fps", "sparseupdate"): (10, 1.3),
    ("mcunet-5fps", "tinytrain"): (9, 1.2),
    ("mbv2-w0.35", "fulltrain"): (104, 5.0), ("mbv2-w0.35", "lastlayer"): (7, 0.9),
    ("mbv2-w0.35", "tinytl"): (48, 2.3), ("mbv2-w0.35", "sparseupdate"): (10, 1.4),
    ("mbv2-w0.35", "tinytrain"): (9, 1.2),
    ("proxyless-w0.3", "fulltrain"): (75, 3.6), ("proxyless-w0.3", "lastlayer"): (8, 1.0),
    ("proxyless-w0.3", "tinytl"): (41, 2.0), ("proxyless-w0.3", "sparseupdate"): (11, 1.4),
    ("proxyless-w0.3", "tinytrain"): (10, 1.3),
}
# Table 2: backward MACs per image of the paper's own TinyTrain plans (task-dependent; these are its figures).
PAPER_TINYTRAIN_BACKWARD_MACS = {"mcunet-5fps": 6.51e6, "mbv2-w0.35": 4.90e6, "proxyless-w0.3": 5.00e6}
PAPER_IMAGES, PAPER_ITERATIONS = 25, 40


def adaptation_macs(spec: ArchSpec, resolution: int, backward_macs: float, n_images: int, iterations: int,
                    fisher_from: int | None = None, first_trained: int | None = None, cached: bool = False,
                    pool_views: int = 0) -> dict[str, float]:
    """Conv MACs of one adaptation at batch 1, by phase.

    Every iteration: the support set's forward for the prototypes, the pseudo-query's forward, and the
    plan's `backward_macs` (per image). The Fisher pass (when `fisher_from`, the earliest candidate layer,
    is given): the prototypes' forward, a forward, and the input gradients down to `fisher_from`. At the
    end the prototypes' forward. With `cached` (the support set's prefix held in memory, this engine),
    the frozen prefix below the block of `first_trained` is computed once and every support-set
    forward starts after it; with `pool_views` P the pseudo-queries' prefixes are also computed once per
    view. Without it, as the paper's figures were measured, every forward is a whole one."""
    layers = conv_layers(spec, resolution)
    full = float(sum(l.macs for l in layers))

    def suffix(layer: int | None) -> float:
        if layer is None:
            return full
        block = layers[layer].block
        return float(sum(l.macs for l in layers if l.block >= block))

    n, it = float(n_images), float(iterations)
    s_train = suffix(first_trained) if cached else full
    out = {"prefix": n * (full - s_train) if cached else 0.0, "fisher": 0.0}
    if fisher_from is not None:
        s_fisher = suffix(fisher_from) if cached else full
        out["fisher"] = n * (2 * s_fisher + sum(l.macs for l in layers[fisher_from + 1:]))
    views = min(int(pool_views), int(iterations)) if cached else 0
    query = s_train if views else full
    out["training"] = views * n * (full - s_train) + it * n * (s_train + query + float(backward_macs))
    out["prototypes"] = n * s_train
    return out


def paper_adaptation_macs(model: str, method: str, n_images: int = PAPER_IMAGES,
                          iterations: int = PAPER_ITERATIONS) -> dict[str, float]:
    """`adaptation_macs` of the paper's own plan of `method` on `model` (128 px, no caching): TinyTrain's
    backward MACs from Table 2, the baselines' from their fixed plans."""
    from .baselines import fulltrain_plan, lastlayer_plan, sparseupdate_plan, tinytl_plan
    from .model import CostModel

    spec = get_spec(model)
    if method == "tinytrain":
        back, fisher_from = PAPER_TINYTRAIN_BACKWARD_MACS[model], fisher_first_layer(spec)
    else:
        makers = {"fulltrain": fulltrain_plan, "lastlayer": lastlayer_plan, "tinytl": tinytl_plan}
        plan = sparseupdate_plan(spec, None, 128) if method == "sparseupdate" else makers[method](spec, 128)
        back, fisher_from = CostModel(spec, 128).backward_macs(plan), None
    return adaptation_macs(spec, 128, back, n_images, iterations, fisher_from)


def fisher_first_layer(spec: ArchSpec) -> int:
    """The earliest layer TinyTrain's Fisher pass inspects by default: the first of the last 6 blocks."""
    first = max(0, len(spec.blocks) - 6)
    return min(l.index for l in conv_layers(spec) if l.block >= first)


def calibrate(device: str) -> float:
    """MACs per second of `device` from the paper: the geometric mean, over the rows of its end-to-end
    table (Table 9 or 10), of each row's adaptation MACs divided by its total time."""
    rows = PAPER_END_TO_END[device]
    logs = [math.log(sum(paper_adaptation_macs(m, meth).values()) / (f + r)) for (m, meth), (f, r) in rows.items()]
    return math.exp(sum(logs) / len(logs))


def calibrate_power(device: str = "pi-zero-2") -> float:
    """Average watts from Fig. 5b energy over Table 9 total time, mean over Table 9's rows (Pi Zero 2 only:
    the paper gives no energy for the Jetson Nano)."""
    if device != "pi-zero-2":
        raise BadInput("the paper reports energy only for the Raspberry Pi Zero 2 (Fig. 5b)")
    rows = PAPER_END_TO_END[device]
    watts = [1000 * PAPER_FIG5[key][1] / (f + r) for key, (f, r) in rows.items()]
    return sum(watts) / len(watts)


@dataclass(frozen=True)
class Estimate:
    """Estimated time and energy of one adaptation on a device, with what it rests on."""

    device: str
    macs: float
    seconds: float | None
    joules: float | None
    basis: str
    caveat: str = ""

    @property
    def available(self) -> bool:
        return self.seconds is not None

    def to_dict(self) -> dict:
        return asdict(self) | {"available": self.available, "minutes": None if self.seconds is None
                               else self.seconds / 60}


def estimate_adaptation(device: DeviceProfile, macs: float, memory_needed: int | None = None) -> Estimate:
    """Time = `macs` / the device's throughput, energy = time x its power (None where the profile lacks
    the figure). A plan needing more than the device's RAM would swap, which the estimate does not model."""
    caveat = ""
    if memory_needed is not None and memory_needed > device.ram_bytes:
        caveat = (f"the plan needs {format_bytes(memory_needed)}, more than the device's "
                  f"{format_bytes(device.ram_bytes)} of RAM: it would swap, so this is a lower bound (the paper's "
                  f"FullTrain and TinyTL, which do not fit a Pi Zero 2, took 3-7x longer than such an estimate)")
    if device.train_macs_per_second is None:
        return Estimate(device.name, macs, None, None,
                        f"the {device.name} profile has no train_macs_per_second (add it, with power_watts, "
                        f"to a --devices-file entry)", caveat)
    seconds = macs / device.train_macs_per_second
    joules = seconds * device.power_watts if device.power_watts is not None else None
    basis = (f"{macs / 1e9:.1f} G MACs at {device.train_macs_per_second / 1e6:.1f} M MAC/s"
             + (f" and {device.power_watts:.2f} W" if device.power_watts is not None else
                ", no power figure (energy unavailable)")
             + (f"; {device.estimate_basis}" if device.estimate_basis else ""))
    return Estimate(device.name, macs, seconds, joules, basis, caveat)


def paper_check(device: DeviceProfile) -> list[dict]:
    """The estimate against the paper's own figures: Table 9/10 totals for the device's table, and Fig. 5
    (times and energy, every method) for the Pi Zero 2. Relative error = estimate / paper - 1."""
    rows = []
    for (model, method), (f, r) in PAPER_END_TO_END.get(device.name, {}).items():
        est = estimate_adaptation(device, sum(paper_adaptation_macs(model, method).values()))
        table = "Table 9" if device.name == "pi-zero-2" else "Table 10"
        rows.append({"source": table, "model": model, "method": method, "paper_seconds": f + r,
                     "estimate_seconds": est.seconds,
                     "error": None if est.seconds is None else est.seconds / (f + r) - 1})
    if device.name == "pi-zero-2":
        from .baselines import fulltrain_plan, tinytl_plan
        for (model, method), (minutes, kj) in PAPER_FIG5.items():
            need = None
            if method in ("fulltrain", "tinytl"):
                maker = fulltrain_plan if method == "fulltrain" else tinytl_plan
                need = memory_needed(get_spec(model), maker(get_spec(model), 128), device)
            est = estimate_adaptation(device, sum(paper_adaptation_macs(model, method).values()), need)
            rows.append({"source": "Fig. 5", "model": model, "method": method, "paper_seconds": 60 * minutes,
                         "estimate_seconds": est.seconds, "paper_joules": 1000 * kj, "estimate_joules": est.joules,
                         "error": None if est.seconds is None else est.seconds / (60 * minutes) - 1,
                         "energy_error": None if est.joules is None else est.joules / (1000 * kj) - 1,
                         "exceeds_ram": bool(est.caveat)})
    return rows


def format_paper_check(device: DeviceProfile) -> str:
    """`tinytrain plan --device DEVICE --paper-check`: the estimate against the paper's figures, as a table."""
    lines = [f"{device.name}: estimate ({device.estimate_basis or 'no basis given'}) against the paper",
             f"{'source':<9}{'model':<16}{'method':<14}{'paper s':>9}{'estimate s':>12}{'error':>9}"
             f"{'paper kJ':>10}{'estimate kJ':>13}{'error':>9}"]
    for r in paper_check(device):
        est = "-" if r["estimate_seconds"] is None else f"{r['estimate_seconds']:.0f}"
        err = "-" if r["error"] is None else f"{100 * r['error']:+.1f}%"
        line = f"{r['source']:<9}{r['model']:<16}{r['method']:<14}{r['paper_seconds']:>9.0f}{est:>12}{err:>9}"
        if "paper_joules" in r:
            ej = "-" if r["estimate_joules"] is None else f"{r['estimate_joules'] / 1000:.2f}"
            ee = "-" if r["energy_error"] is None else f"{100 * r['energy_error']:+.1f}%"
            line += f"{r['paper_joules'] / 1000:>10.1f}{ej:>13}{ee:>9}" + ("  over RAM" if r["exceeds_ram"] else "")
        lines.append(line)
    return "\n".join(lines)

