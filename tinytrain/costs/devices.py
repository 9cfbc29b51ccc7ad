"""Device profiles: a target turned into a memory budget, a compute budget, and what counts in memory.

The built-in table is `devices.json` beside this file. Users extend or override it with their own JSON
file of the same shape, passed explicitly (`extra_file=`, CLI `--devices-file`) or named by the
environment variable TINYTRAIN_DEVICES (several files separated by the OS path separator). A later
entry with the same name replaces an earlier one.

What counts (paper_spec 5.4): on an MCU the frozen weights live in flash, so RAM must hold only the
backward-pass memory of the paper's Table 2, and the whole model (at `frozen_weight_bits`) must fit in
flash. On a Linux board every weight is in RAM too (the paper's Table 8 view).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ..models.specs import ArchSpec
from .model import CostModel
from .plan import UpdatePlan
from .units import parse_bytes

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
    batch_size: int = 1
    cores: int | None = None
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "DeviceProfile":
        """From a JSON entry; sizes may be strings like '320KB' (keys ram/flash/memory_budget or *_bytes)."""
        def size(key: str, required: bool = True) -> int | None:
            value = d.get(f"{key}_bytes", d.get(key))
            if value is None:
                if required:
                    raise ValueError(f"device {d.get('name', '?')!r} lacks {key!r}; give e.g. \"{key}\": \"1MB\"")
                return None
            return parse_bytes(value)

        name = d.get("name")
        if not name:
            raise ValueError("every device entry needs a 'name'")
        ram = size("ram")
        budget = size("memory_budget", required=False) or ram
        compute = float(d.get("compute_budget", 0.15))
        if not 0 < compute <= 1:
            raise ValueError(f"device {name!r}: compute_budget is a fraction of FullTrain's backward MACs "
                             f"in (0, 1] (got {compute})")
        bits = int(d.get("frozen_weight_bits", 32))
        if bits not in (8, 16, 32):
            raise ValueError(f"device {name!r}: frozen_weight_bits must be 8, 16 or 32 (got {bits})")
        return DeviceProfile(
            name=name, description=d.get("description", ""), ram_bytes=ram, flash_bytes=size("flash", False),
            memory_budget_bytes=budget, compute_budget=compute,
            frozen_weights_in_flash=bool(d.get("frozen_weights_in_flash", False)), frozen_weight_bits=bits,
            batch_size=int(d.get("batch_size", 1)), cores=d.get("cores"), notes=d.get("notes", ""),
        )


def _read_table(text: str, source: str) -> list[DeviceProfile]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"device file {source} is not valid JSON: {exc}") from None
    entries = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f"device file {source} must hold a list of devices or {{\"devices\": [...]}}")
    return [DeviceProfile.from_dict(e) for e in entries]


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
        table.update({d.name: d for d in _read_table(path.read_text(), str(path))})
    return table


def list_devices(extra_file: str | Path | None = None) -> list[DeviceProfile]:
    return list(load_devices(extra_file).values())


def get_device(name: str, extra_file: str | Path | None = None) -> DeviceProfile:
    table = load_devices(extra_file)
    if name not in table:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(table)} or add it to a JSON file "
                         f"named by --devices-file or ${ENV_VAR}")
    return table[name]


def model_weight_bytes(spec: ArchSpec, bits: int = 32) -> int:
    """Bytes of every backbone parameter (conv + BN) at `bits` per value."""
    return CostModel(spec).all_weights_bytes() * bits // 32


def memory_needed(spec: ArchSpec, plan: UpdatePlan, device: DeviceProfile) -> int:
    """RAM the plan needs on `device`: Table-2 backward memory, plus all weights on a Linux board (Table 8)."""
    model = CostModel(spec, plan.resolution)
    need = model.backward_memory(plan).total
    if not device.frozen_weights_in_flash:
        need += model.all_weights_bytes()
    return need


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
