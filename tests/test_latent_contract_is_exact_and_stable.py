"""The latent's definition (btrans_verl.latent) is a contract: pure, exact, the same in every process."""

import math
import subprocess
import sys

import pytest
import torch

from btrans_verl.latent import (
    FINAL_NORM_INDEX,
    LatentConfig,
    _mul32,
    hypothesis_key,
    match_norm,
    mix32,
    norm_index,
    normal_table,
    sample_latent,
)


def test_mul32_is_exact_modular_multiplication():
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, 2**32, (10_000,), generator=g, dtype=torch.int64)
    xs[:3] = torch.tensor([0, 1, 2**32 - 1])
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF, 1):
        got = _mul32(xs, c)
        want = torch.tensor([(int(x) * c) % 2**32 for x in xs[:200]])
        assert torch.equal(got[:200], want)
        assert int(got.min()) >= 0 and int(got.max()) < 2**32


def test_mix32_agrees_on_python_ints_and_tensors_and_is_a_bijection_sample():
    xs = list(range(0, 2**32, 2**32 // 4097))
    t = mix32(torch.tensor(xs, dtype=torch.int64))
    assert [mix32(x) for x in xs] == t.tolist()
    assert len(set(t.tolist())) == len(xs)


def test_golden_values_pin_the_contract():
    # If this test fails, the definition of z changed: every recorded seed now names another mind.
    z = sample_latent(seed=12345, norm_index=norm_index(3, "post_attention_layernorm"), hidden=6, mu=0.0, sigma=1.0)
    assert z.dtype == torch.float32 and z.shape == (6,)
    golden = [-0.09551768004894257, 0.030240047723054886, 1.35067617893219, -0.4138311445713043,
              -0.00896939355880022, 2.2838001251220703]
    assert z.tolist() == golden, z.tolist()


def test_same_seed_is_bit_identical_in_another_process():
    z = sample_latent(seed=2**62 + 7, norm_index=5, hidden=64, mu=0.1, sigma=0.3)
    code = (
        "import torch,sys; from btrans_verl.latent import sample_latent;"
        "z=sample_latent(seed=2**62+7, norm_index=5, hidden=64, mu=0.1, sigma=0.3);"
        "sys.stdout.write(z.numpy().tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == z.numpy().tobytes().hex()


def test_batched_keys_equal_one_at_a_time():
    seeds = [0, 1, 2**40 + 3, 2**63 - 1]
    from btrans_verl.latent import latent_from_keys

    zb = latent_from_keys(hypothesis_key(torch.tensor(seeds)), 9, 32, 0.0, 1.0)
    for i, s in enumerate(seeds):
        assert torch.equal(zb[i], sample_latent(s, 9, 32))


def test_numpy_and_torch_give_the_same_integers_and_floats():
    # CPU engines compute a mind's rows in numpy: the contract must not depend on the array library
    import numpy as np

    from btrans_verl.latent import element_salts, latent_from_keys, norm_salt

    seeds = [0, 1, 2**40 + 3, 2**63 - 1]
    norms = [0, 7, FINAL_NORM_INDEX]
    mu, sigma = [[0.1, 0.0, -0.2]] * 4, [[0.3, 1.0, 2.5]] * 4  # [R, norms]
    keys_t = hypothesis_key(torch.tensor(seeds))
    keys_n = hypothesis_key(np.array(seeds, dtype=np.int64))
    assert isinstance(keys_n, np.ndarray) and keys_n.tolist() == keys_t.tolist()
    zt = latent_from_keys(keys_t[:, None], torch.tensor(norms), 32, torch.tensor(mu), torch.tensor(sigma))
    zn = latent_from_keys(keys_n[:, None], norms, 32, np.array(mu, dtype=np.float32),
                          np.array(sigma, dtype=np.float32), table=normal_table().numpy(),
                          salts=element_salts(32).numpy(), norm_salts=norm_salt(np.array(norms, dtype=np.int64)))
    assert zn.dtype == np.float32 and zn.shape == (4, 3, 32)
    assert zn.tobytes() == zt.numpy().tobytes()
    for r, s in enumerate(seeds):
        for j, n in enumerate(norms):
            assert torch.equal(zt[r, j], sample_latent(s, n, 32, mu[r][j], sigma[r][j]))


def test_distinct_seeds_norms_and_positions_give_distinct_draws():
    a = sample_latent(1, 0, 256)
    assert not torch.equal(a, sample_latent(2, 0, 256))
    assert not torch.equal(a, sample_latent(1, 1, 256))
    assert not torch.equal(sample_latent(1, 0, 256, position=0), sample_latent(1, 0, 256, position=1))
    assert not torch.equal(a, sample_latent(1, 0, 256, position=0))
    # seeds differing only in the high word are different minds too
    assert not torch.equal(sample_latent(5, 0, 64), sample_latent(5 + 2**32, 0, 64))


def test_draws_are_standard_normal_with_mu_and_sigma():
    keys = hypothesis_key(torch.arange(400))
    from btrans_verl.latent import latent_from_keys

    z = latent_from_keys(keys, 7, 512, mu=0.25, sigma=2.0)  # [400, 512]
    assert abs(z.mean().item() - 0.25) < 0.02
    assert abs(z.std().item() - 2.0) < 0.02
    # independent across norms: correlation near zero
    z2 = latent_from_keys(keys, 8, 512, mu=0.0, sigma=1.0)
    corr = torch.corrcoef(torch.stack([z.flatten(), z2.flatten()]))[0, 1].item()
    assert abs(corr) < 0.01


def test_normal_table_is_antisymmetric_with_unit_second_moment():
    t = normal_table().double()
    assert t.shape == (65536,)
    assert torch.equal(t, -t.flip(0))
    assert math.isclose(t.pow(2).mean().item(), 1.0, rel_tol=1e-6)
    assert torch.all(t[1:] > t[:-1])


def test_norm_indices_are_stable_and_name_matching_ignores_wrappers():
    targets = ("input_layernorm", "post_attention_layernorm", "final_norm", "q_norm", "k_norm")
    assert match_norm("model.layers.3.input_layernorm", targets) == ("input_layernorm", 12)
    assert match_norm("model.layers.3.post_attention_layernorm", targets) == ("post_attention_layernorm", 13)
    assert match_norm("model.layers.3.self_attn.q_norm", targets) == ("q_norm", 14)
    assert match_norm("model.norm", targets) == ("final_norm", FINAL_NORM_INDEX)
    assert match_norm("base_model.model.model.layers.0._fsdp_wrapped_module.input_layernorm", targets) == (
        "input_layernorm", 0)
    assert match_norm("model.layers.3.mlp", targets) is None
    assert match_norm("model.layers.3.self_attn.q_norm", ("input_layernorm",)) is None


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(sigma=-0.1), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(sigma=float("inf")), "sigma"),
        (dict(mu=float("nan")), "mu"),
        (dict(targets=("input_layernorm", "nope")), "nope"),
        (dict(targets=()), "targets"),
        (dict(granularity="step"), "granularity"),
    ],
)
def test_config_rejects_bad_values_naming_them(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LatentConfig(**kwargs)


def test_seeds_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        sample_latent(-1, 0, 4)
    with pytest.raises(ValueError, match="seed"):
        sample_latent(2**63, 0, 4)
