"""The CPU platform's verl entry point (`verl.plugins: btrans_cpu`, or
`VERL_USE_EXTERNAL_MODULES=btrans_verl.cpu.autoload`).

verl imports it on `import verl` in every process that imports verl, before anything resolves verl's platform.
Importing it applies `btrans_verl.cpu.apply_verl_patches()` (a no-op unless the CPU switch `BTRANS_CPU=1` is on).
The vLLM side has its own entry point, `vllm.general_plugins: btrans_cpu` -> `btrans_verl.cpu.apply_vllm_patches`.
"""

from btrans_verl.cpu import apply_verl_patches

APPLIED = apply_verl_patches()
