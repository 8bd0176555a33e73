"""`conf/btrans/*.yaml` and `BTransSettings` agree: the same keys, the same defaults, and every key documented
(a comment right above it) in the YAML, which is where users read what a setting means."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from omegaconf import OmegaConf

from btrans_verl.verl.settings import AdaptiveSigmaSettings, BTransSettings, RLVRSettings, TTRLSettings

CONF = Path(__file__).resolve().parents[1] / "conf" / "btrans"


def _resolved_btrans(cfg) -> dict:
    return OmegaConf.to_container(cfg.btrans, resolve=True)


def test_composed_defaults_equal_the_dataclass_defaults(compose_cfg):
    rlvr = _resolved_btrans(compose_cfg("+btrans=on"))
    ttrl = _resolved_btrans(compose_cfg("+btrans=on", "btrans/task=ttrl"))
    defaults = BTransSettings().to_dict()
    assert {k: v for k, v in rlvr.items()} == {k: v for k, v in defaults.items() if k != "ttrl"}
    assert ttrl["ttrl"] == dataclasses.asdict(TTRLSettings()) and ttrl["task"] == "ttrl"
    assert rlvr["rlvr"] == dataclasses.asdict(RLVRSettings())
    assert rlvr["adaptive_sigma"] == dataclasses.asdict(AdaptiveSigmaSettings())
    off = _resolved_btrans(compose_cfg("+btrans=off"))
    assert off == {**rlvr, "enable": False}  # the baseline differs in the switch only


def _documented_keys(path: Path, node: str) -> dict[str, bool]:
    """Keys directly under `node:` (two-space indent) in a YAML file -> whether a comment precedes them."""
    lines = path.read_text().splitlines()
    out, inside, depth = {}, False, None
    for i, line in enumerate(lines):
        if re.match(rf"^{node}:\s*$", line):
            inside = True
            continue
        if inside and line and not line.startswith(" ") and not line.startswith("#"):
            break
        m = re.match(r"^(\s+)([a-z_]+):", line) if inside else None
        if m and (depth is None or len(m.group(1)) == depth):
            depth = len(m.group(1))
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            out[m.group(2)] = lines[j].strip().startswith("#")
    return out


def test_every_btrans_key_is_documented_in_the_yaml_that_sets_it():
    fields = {f.name for f in dataclasses.fields(BTransSettings) if f.init}
    on = _documented_keys(CONF / "on.yaml", "btrans")
    tasks = {**_documented_keys(CONF / "task" / "rlvr.yaml", "btrans"),
             **_documented_keys(CONF / "task" / "ttrl.yaml", "btrans")}
    assert set(on) | set(tasks) == fields, (on, tasks)
    assert all(on.values()) and all(tasks.values()), (on, tasks)
    for sub, cls, path in (("rlvr", RLVRSettings, CONF / "task" / "rlvr.yaml"),
                           ("ttrl", TTRLSettings, CONF / "task" / "ttrl.yaml"),
                           ("adaptive_sigma", AdaptiveSigmaSettings, CONF / "on.yaml")):
        text = path.read_text()
        for f in dataclasses.fields(cls):
            assert re.search(rf"#.*\n\s+{f.name}:", text) or re.search(rf"# {f.name} ", text), (sub, f.name)
