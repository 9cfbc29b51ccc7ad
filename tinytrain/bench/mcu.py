"""`tinytrain bench mcu`: the C runtime on an emulated Cortex-M7 (implemented in tinytrain.mcu.bench)."""
from ..mcu.bench import McuResult, McuSettings, measure_mcu

__all__ = ["McuResult", "McuSettings", "measure_mcu"]
