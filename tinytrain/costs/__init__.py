"""The analytic cost model (paper_spec.md section 5), update plans, baseline plans and device profiles.

Pure Python (no torch): planners and the CLI can price a plan without building a network.
"""
from .baselines import (fulltrain_plan, lastlayer_plan, sparseupdate_plan, tinytl_plan, baseline_plans,
                        compare_plans, MethodCost)
from .devices import DeviceProfile, check_fit, get_device, list_devices, memory_needed
from .model import (CostModel, MemoryBreakdown, backward_macs, backward_memory, compute_budget_macs,
                    forward_macs, peak_inference_buffer_bytes, saved_activation_bytes_last_k_blocks,
                    sparse_backward_macs, sparse_memory_bytes)
from .plan import LayerUpdate, UpdatePlan
from .units import format_bytes, format_macs, parse_bytes, parse_compute_budget

__all__ = [
    "CostModel", "MemoryBreakdown", "backward_macs", "backward_memory", "compute_budget_macs", "forward_macs",
    "peak_inference_buffer_bytes", "saved_activation_bytes_last_k_blocks", "sparse_backward_macs",
    "sparse_memory_bytes", "LayerUpdate", "UpdatePlan", "fulltrain_plan", "lastlayer_plan", "tinytl_plan",
    "sparseupdate_plan", "baseline_plans", "compare_plans", "MethodCost", "DeviceProfile", "check_fit",
    "get_device", "list_devices", "memory_needed", "format_bytes", "format_macs", "parse_bytes",
    "parse_compute_budget",
]
