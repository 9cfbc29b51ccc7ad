"""`tinytrain profile`: one model's per-layer costs and the Table-2 style comparison, as data and as text."""
from __future__ import annotations

from ..models.specs import ArchSpec, get_spec
from .baselines import METHOD_LABELS, SPARSEUPDATE_POLICIES, baseline_plans, compare_plans
from .devices import DeviceProfile, check_fit
from .model import CostModel, layer_rows, saved_activation_bytes_last_k_blocks
from .units import format_bytes, format_macs


def profile(spec: ArchSpec | str, resolution: int | None = None, optimizer: str = "adam",
            device: DeviceProfile | None = None) -> dict:
    """Everything `tinytrain profile --json` prints (bytes and MACs as integers)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    model = CostModel(spec, resolution)
    res = model.resolution
    plans = baseline_plans(spec, res, optimizer)
    costs = compare_plans(model, plans)
    n_k = min(6, len(spec.blocks))
    out = {
        "model": spec.name, "resolution": res, "optimizer": optimizer,
        "n_conv_layers": len(model.layers), "n_blocks": len(spec.blocks),
        "params": sum(l.params for l in model.layers), "forward_macs": model.forward_macs,
        "peak_inference_buffer_bytes": model.peak_buffer,
        "saved_activation_bytes_last_k_blocks": [
            round(saved_activation_bytes_last_k_blocks(spec, k, res)) for k in range(1, n_k + 1)],
        "layers": layer_rows(spec, res),
        "methods": {name: {**c.to_dict(), "plan": plans[name].to_dict()} for name, c in costs.items()},
        "notes": [],
    }
    if "sparseupdate" not in costs:
        out["notes"].append(f"SparseUpdate has no published policy for {spec.name} (only for "
                            f"{', '.join(SPARSEUPDATE_POLICIES)}); it is left out")
    if device is not None:
        out["device"] = device.to_dict()
        for name, plan in plans.items():
            out["methods"][name]["device_fit"] = check_fit(spec, plan, device).to_dict()
    return out


def format_profile(p: dict) -> str:
    """The human-readable report: per-layer table, Table-11 column, Table-2 style summary."""
    lines = [f"{p['model']} @ {p['resolution']}px: {p['n_conv_layers']} conv layers, {p['n_blocks']} blocks, "
             f"{p['params'] / 1e6:.3f} M conv weights, {p['forward_macs'] / 1e6:.2f} M forward MACs, "
             f"peak inference buffer {format_bytes(p['peak_inference_buffer_bytes'])}", ""]
    lines.append(f"{'idx':>3} {'layer':16} {'kind':11} {'cin>cout':>9} {'k':>2} {'s':>2} {'H':>7} "
                 f"{'weights':>8} {'MACs':>8} {'in':>9} {'out':>9} {'later MACs':>10}")
    for r in p["layers"]:
        lines.append(f"{r['index']:>3} {r['name']:16} {r['kind']:11} {str(r['cin']) + '>' + str(r['cout']):>9} "
                     f"{r['kernel']:>2} {r['stride']:>2} {str(r['h_in']) + '>' + str(r['h_out']):>7} "
                     f"{r['params']:>8,} {format_macs(r['macs']):>8} {format_bytes(r['input_bytes']):>9} "
                     f"{format_bytes(r['output_bytes']):>9} {format_macs(r['later_macs']):>10}")
    lines += ["", "saved activations to back-propagate through the last k blocks (paper Table 11):"]
    lines.append("  " + "  ".join(f"k={k}: {b / 1024:.1f} KiB"
                                  for k, b in enumerate(p["saved_activation_bytes_last_k_blocks"], 1)))
    lines += ["", f"backward pass, {p['optimizer']} (paper Table 2 accounting; MB = MiB):",
              f"  {'method':13} {'batch':>5} {'memory':>11} {'ratio':>8} {'MACs':>8} {'ratio':>6} "
              f"{'weights':>10} {'optimizer':>10} {'activations':>11} {'+all weights':>12}"]
    for name, m in p["methods"].items():
        fit = ""
        if "device_fit" in m:
            f = m["device_fit"]
            fit = "  fits " + p["device"]["name"] if f["fits"] else "  does not fit " + p["device"]["name"] + \
                " (" + ", ".join(k for k in ("memory", "flash", "compute") if not f["fits_" + k]) + ")"
        lines.append(f"  {METHOD_LABELS[name]:13} {m['batch_size']:>5} {format_bytes(m['memory_bytes'], 4, 'MiB'):>11} "
                     f"{m['memory_ratio']:>7,.1f}x {format_macs(m['backward_macs']):>8} {m['compute_ratio']:>5.2f}x "
                     f"{format_bytes(m['updated_weights_bytes']):>10} {format_bytes(m['optimizer_state_bytes']):>10} "
                     f"{format_bytes(m['activation_bytes'], 4, 'MiB'):>11} "
                     f"{format_bytes(m['memory_with_all_weights_bytes'], 4, 'MiB'):>12}{fit}")
    lines += [f"note: {n}" for n in p["notes"]]
    return "\n".join(lines)
