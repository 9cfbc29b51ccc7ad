"""The adapted sparse update as plain C for microcontrollers.

`export` writes a C99 source tree for a saved model (`tinytrain export --format c`); `memory` plans its
static arena; `reference` runs the same training schedule in PyTorch; `build` compiles and runs the
bench program on the host and on an emulated Cortex-M7 (`tinytrain bench mcu`). The C sources are in
`runtime/` (shipped into every export), `harness/` (the bench program) and `board/` (startup file and
linker script for QEMU's mps2-an500).
"""
