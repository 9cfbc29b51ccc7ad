"""`tinytrain bench mcu`: the C runtime on an emulated Cortex-M7 (implemented in tinytrain.mcu.bench)."""
from ..mcu.bench import add_arguments, run

__all__ = ["add_arguments", "run"]
