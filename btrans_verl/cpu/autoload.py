"""Import-time hook for verl: `VERL_USE_EXTERNAL_MODULES=btrans_verl.cpu.autoload`.

verl imports the modules named in `VERL_USE_EXTERNAL_MODULES` on `import verl` (`verl/__init__.py:49-52`), in
every process that imports verl, before anything resolves verl's platform; unlike `verl.plugins` entry points,
errors raised here propagate. Importing this module applies `btrans_verl.cpu.apply_verl_patches()` (a no-op
unless the CPU switch `BTRANS_CPU=1` is on).
"""

from btrans_verl.cpu import apply_verl_patches

APPLIED = apply_verl_patches()
