"""B-Trans Hydra configs, installed as the package `btrans_verl.conf` (pyproject maps it to the top-level `conf/`
directory). The search-path plugin `hydra_plugins.btrans_verl_searchpath` appends `pkg://btrans_verl.conf` to
Hydra's search path, so verl's entry point resolves the groups below.

    btrans=on | off            +btrans=on  (B-Trans)   +btrans=off  (the baseline: B-Trans off, all else equal)
    btrans/task=rlvr | ttrl    switch the task (default rlvr): btrans/task=ttrl      (no `+`: on/off pick a default)
    btrans/lora=none | on      LoRA training (default none): btrans/lora=on          (no `+`)

No Python lives here; this file only makes the directory a package so its YAML ships as package data.
"""
