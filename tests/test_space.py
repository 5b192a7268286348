"""Search space: the Arch config, sampling, variation, validation, sizes, analytic counts."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autovit_ray.plan import count_macs, count_params
from autovit_ray.space import Arch, load_space, space_for_arch, space_from_dict, yaml_dict_from_record
from autovit_ray.space.__main__ import main

SPACES = ("xxs", "xs", "s")


def test_arch_json_round_trip_hash_and_name():
    arch = load_space("xxs").smallest()
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_params(arch.to_params()) == arch
    assert Arch.from_params({k: str(v) for k, v in arch.to_params().items()}) == arch  # as MLflow returns
    # The hash is of the canonical JSON, so it is the same on every machine and run.
    assert arch.arch_hash == "7ad6fab1e1ae"
    assert str(arch) == "xxs_r128_c16_mb16x1-24x2-32x2_t48x2h2m1.5-64x2h2m1.5-80x2h2m1.5"
    assert len({arch, Arch.from_json(arch.to_json())}) == 1  # hashable, equal by value


def test_arch_rejects_malformed_input():
    good = load_space("xxs").smallest().to_dict()
    with pytest.raises(ValueError, match="malformed Arch JSON"):
        Arch.from_json("{not json")
    with pytest.raises(ValueError, match="missing fields \\['resolution'\\]"):
        Arch.from_dict({k: v for k, v in good.items() if k != "resolution"})
    with pytest.raises(ValueError, match="same length"):
        Arch.from_dict({**good, "transformer_heads": [2, 2]})
    with pytest.raises(ValueError, match="stem_width must be an integer"):
        Arch.from_dict({**good, "stem_width": 16.5})


@pytest.mark.parametrize("name", SPACES)
def test_sample_draws_each_choice_uniformly(name):
    space = load_space(name)
    rng = random.Random(0)
    draws = [space.sample(rng) for _ in range(6000)]
    stages = Counter(a.num_transformer_stages for a in draws)
    # Per-choice sampling: 3 and 4 stages about equally often (whole-subnet sampling gives ~98% 4).
    assert abs(stages[3] / len(draws) - 0.5) < 0.03
    for i, choices in enumerate(space.transformer_stages[:3]):
        heads = Counter(a.transformer_heads[i] for a in draws)
        for h in choices.heads:
            assert abs(heads[h] / len(draws) - 1 / len(choices.heads)) < 0.03
        depths = Counter(a.transformer_depths[i] for a in draws)
        for d in choices.depths:
            assert abs(depths[d] / len(draws) - 1 / len(choices.depths)) < 0.03
    fourth = [a for a in draws if a.num_transformer_stages == 4]
    widths = Counter(a.transformer_widths[3] for a in fourth)
    assert all(abs(widths[w] / len(fourth) - 0.5) < 0.04 for w in space.transformer_stages[3].widths)
    assert all(space.contains(a) for a in draws)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(SPACES))
def test_mutate_and_crossover_always_valid(seed, name):
    space = load_space(name)
    rng = random.Random(seed)
    a, b = space.sample(rng), space.sample(rng)
    for p_depth, p_block in ((0.2, 0.4), (1.0, 1.0), (0.0, 0.0)):
        child = space.mutate(a, rng, p_depth, p_block)
        assert space.contains(child)
    assert space.mutate(a, rng, 0.0, 0.0) == a
    child = space.crossover(a, b, rng)
    assert space.contains(child)
    assert child.num_transformer_stages in (a.num_transformer_stages, b.num_transformer_stages)


def test_mutation_changes_choices_at_the_given_rate():
    space = load_space("xxs")
    rng = random.Random(1)
    parent = space.largest()
    changed = sum(space.mutate(parent, rng, 0.0, 0.4).transformer_heads[0] != parent.transformer_heads[0]
                  for _ in range(3000))
    # A redraw hits a different head count 2/3 of the time: expected rate 0.4 * 2/3.
    assert abs(changed / 3000 - 0.4 * 2 / 3) < 0.03


def test_largest_smallest_and_sizes():
    space = load_space("xxs")
    assert space.largest().num_transformer_stages == 4
    assert space.largest().transformer_widths == (64, 80, 96, 112)
    assert space.smallest().transformer_widths == (48, 64, 80)
    front = 2 * (2 * 2) ** 3  # stem x 3 MBConv stages (width x depth)
    per_stage = 2 * 4 * 3 * 2  # width x depth x heads x MLP ratio
    assert space.size(per_resolution=True) == front * (per_stage**3 + per_stage**4) == 693_633_024
    union_stage = 5 * 4 * 3 * 2  # any of the 5 XXS transformer widths in every stage
    assert space.size(constrained=False, per_resolution=True) == front * (union_stage**3 + union_stage**4)
    assert space.size() == 3 * space.size(per_resolution=True)  # 3 ImageNet-style resolutions


def test_constrained_size_counts_only_non_decreasing_widths(tmp_path):
    raw = _raw("xxs")
    raw["transformer_stages"] = [dict(s, widths=[48, 64, 80]) for s in raw["transformer_stages"]]
    raw["num_transformer_stages"] = [3]
    space = space_from_dict(raw)
    per_stage = 4 * 3 * 2
    monotone = 10  # non-decreasing triples from 3 values: C(5, 3)
    assert space.size(constrained=True, per_resolution=True) == 2 * 4**3 * monotone * per_stage**3
    rng = random.Random(0)
    assert all(list(a.transformer_widths) == sorted(a.transformer_widths)
               for a in (space.sample(rng) for _ in range(300)))


def _raw(name: str) -> dict:
    """A built-in space's YAML with the shared input profiles (configs/profiles.yaml) written into it."""
    from autovit_ray.space import CONFIG_DIR, PROFILES_FILE
    return {**yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()), **yaml.safe_load(PROFILES_FILE.read_text())}


def _space_profiles() -> list[tuple[str, str]]:
    return [(name, profile) for name in SPACES for profile in sorted(_raw(name)["input_profiles"])]


@pytest.mark.parametrize(("name", "profile"), _space_profiles())
def test_a_space_record_rebuilds_the_same_space(name, profile):
    """Checkpoints and LUTs carry `to_dict()` and rebuild the space from it without the YAML: every
    profile's fields must survive (a patch profile's record once lost its patch sizes, and every LUT
    built for it was refused as corrupt)."""
    space = load_space(name, input_profile=profile)
    record = json.loads(json.dumps(space.to_dict()))
    rebuilt = space_from_dict(yaml_dict_from_record(record))
    assert rebuilt.fingerprint() == space.fingerprint() and rebuilt.input_profile == space.input_profile
    assert space_from_dict(space.to_yaml_dict()).fingerprint() == space.fingerprint()


def test_fingerprint_tracks_everything_that_changes_weights_or_latency():
    base = load_space("xxs")
    assert base.fingerprint() == load_space("xxs").fingerprint()
    assert base.fingerprint() != load_space("xs").fingerprint()
    assert base.fingerprint() != load_space("xxs", input_profile="cifar10").fingerprint()
    raw = _raw("xxs")
    raw["fixed"]["head_dim"] = 8
    assert space_from_dict(raw).fingerprint() != base.fingerprint()


def test_validate_names_field_value_and_allowed():
    space = load_space("xxs")
    arch = space.smallest()
    with pytest.raises(ValueError, match="'xs' but this is the 'xxs' supernet"):
        space.validate(load_space("xs").smallest())
    with pytest.raises(ValueError, match=r"transformer_heads\[1\] = 7 is not in the space; allowed: \[2, 3, 4\]"):
        space.validate(dataclasses.replace(arch, transformer_heads=(2, 7, 2)))
    with pytest.raises(ValueError, match="never decrease"):
        space.validate(dataclasses.replace(arch, transformer_widths=(64, 48, 80)))
    with pytest.raises(ValueError, match=r"resolution = 100 .* allowed: \[128, 192, 256\]"):
        space.validate(dataclasses.replace(arch, resolution=100))
    with pytest.raises(ValueError, match="num_transformer_stages = 2"):
        space.validate(dataclasses.replace(arch, transformer_widths=(48, 64), transformer_depths=(2, 2),
                                           transformer_heads=(2, 2), transformer_mlp_ratios=(1.5, 1.5)))


def test_bad_space_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown search space 'xxxl'"):
        load_space("xxxl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="malformed search-space YAML"):
        load_space(bad)
    raw = _raw("xxs")
    del raw["transformer_stages"][0]["heads"]
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="missing 'heads' in transformer stage 1"):
        load_space(bad)
    raw = _raw("xxs")
    raw["input_profiles"]["imagenet"]["resolutions"] = [224]  # 224 / 32 = 7: odd map before a stride 2
    with pytest.raises(ValueError, match="resolution 224"):
        space_from_dict(raw)
    raw = _raw("xxs")
    raw["input_profiles"]["digits"]["resolutions"] = [6]  # 6 -> 3x3 maps: not divisible by the 2x2 patch
    with pytest.raises(ValueError, match="not divisible by the 2x2 patch"):
        space_from_dict(raw)
    with pytest.raises(ValueError, match="no input profile 'mnist'"):
        load_space("xxs", input_profile="mnist")


def test_describe_cli_json(capsys):
    assert main(["describe", "xxs", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_constrained_per_resolution"] == 693_633_024
    assert info["params_min"] < info["params_max"]
    assert info["choices"]["num_transformer_stages"] == [3, 4]
    assert main(["describe", "nope"]) == 2


def test_a_profile_with_per_stage_patches_gives_every_attention_several_tokens():
    old, new = load_space("xxs", input_profile="cifar10"), load_space("xxs", input_profile="cifar10-p1")
    # at 32 px the last two stages run on 2x2 maps: one 2x2 patch is one token, attention a no-op
    assert old.attention_tokens(32) == [16, 4, 1, 1]
    assert new.attention_tokens(32) == [16, 4, 4, 4]
    assert min(new.attention_tokens(32)) >= 4
    # the patch changes no weight: the same parameters, other attention MACs
    arch_old, arch_new = old.largest(), new.largest()
    assert count_params(arch_old, 10, old) == count_params(arch_new, 10, new)
    assert count_macs(arch_new, 10, new) > count_macs(arch_old, 10, old)
    # the profile enters the dict (and fingerprint) only when it sets patch sizes
    assert "patch_sizes" not in old.to_dict()["profile"] and new.to_dict()["profile"]["patch_sizes"] == [2, 2, 1, 1]
    assert old.fingerprint() != new.fingerprint()


def test_archs_of_a_patch_profile_name_it_and_are_refused_elsewhere():
    old, new = load_space("xxs", input_profile="cifar10"), load_space("xxs", input_profile="cifar10-p1")
    arch = new.sample(random.Random(3))
    assert arch.input_profile == "cifar10-p1" and old.sample(random.Random(3)).input_profile is None
    assert Arch.from_json(arch.to_json()) == arch and Arch.from_params(arch.to_params()) == arch
    assert "profile" not in old.smallest().to_dict()  # unchanged JSON, so unchanged hashes
    assert str(arch).endswith("@cifar10-p1")
    assert space_for_arch(arch).input_profile.name == "cifar10-p1"
    assert space_for_arch(old.smallest()).input_profile.name == "cifar10"  # never inferred from 32 px
    with pytest.raises(ValueError, match="Arch.input_profile is 'cifar10-p1' but this space .* profile 'cifar10'"):
        old.validate(arch)
    with pytest.raises(ValueError, match="Arch.input_profile is None"):
        new.validate(old.smallest())
    # timm's pretrained_cfg of such a model: CIFAR-10's evaluation (32 px, no crop), not ImageNet's
    from autovit_ray.models import pretrained_cfg

    cfg = pretrained_cfg(arch, 10)
    assert cfg["input_size"] == (3, 32, 32) and cfg["crop_pct"] == 1.0
    # mutation and crossover keep the profile
    rng = random.Random(0)
    assert new.mutate(arch, rng).input_profile == "cifar10-p1"
    assert new.crossover(arch, new.smallest(), rng).input_profile == "cifar10-p1"


# An arch of the cifar10-p1 input profile as every earlier version wrote it: the file format keeps "profile".
OLD_P1_ARCH_JSON = (
    '{"mbconv_depths":[1,2,2],"mbconv_widths":[16,24,32],"profile":"cifar10-p1","resolution":32,'
    '"stem_width":16,"supernet":"xxs","transformer_depths":[2,2,2],"transformer_heads":[2,2,2],'
    '"transformer_mlp_ratios":[1.5,1.5,1.5],"transformer_widths":[48,64,80]}')


def test_arch_json_of_earlier_versions_loads_and_is_written_byte_identical():
    arch = Arch.from_json(OLD_P1_ARCH_JSON)
    assert arch.input_profile == "cifar10-p1" and arch == load_space("xxs", input_profile="cifar10-p1").smallest()
    assert arch.to_json() == OLD_P1_ARCH_JSON  # so arch hashes, LUT keys and exported names stay
    assert arch.to_params()["profile"] == "cifar10-p1" and Arch.from_params(arch.to_params()) == arch
    assert str(arch).endswith("@cifar10-p1")
    with pytest.raises(ValueError, match="unknown fields \\['input_profile'\\]"):  # one spelling on disk
        Arch.from_dict({**json.loads(OLD_P1_ARCH_JSON), "input_profile": "cifar10-p1"})


def test_space_yaml_with_the_old_profile_keys_loads_with_a_deprecation_message():
    raw = _raw("xxs")
    old = {("profiles" if k == "input_profiles" else "default_profile" if k == "default_input_profile" else k): v
           for k, v in raw.items()}
    with pytest.warns(FutureWarning, match="profiles in search-space YAML .* is deprecated: it was renamed "
                                           "input_profiles"):
        space = space_from_dict(old)
    assert space.fingerprint() == load_space("xxs").fingerprint()  # default_profile was read too
    with pytest.raises(ValueError, match="sets both profiles and input_profiles"):
        space_from_dict({**raw, "profiles": raw["input_profiles"]})


def test_the_old_profile_flag_is_a_deprecated_alias_of_input_profile(capsys):
    from autovit_ray.profile import build_parser

    with pytest.warns(FutureWarning, match="--profile is deprecated: it was renamed --input-profile"):
        args = build_parser().parse_args(["build", "--supernet", "xxs", "--profile", "digits", "--out", "x"])
    assert args.input_profile == "digits"
    assert build_parser().parse_args(["build", "--supernet", "xxs", "--out", "x"]).input_profile is None
    with pytest.warns(FutureWarning, match="--profile is deprecated"):
        assert main(["describe", "xxs", "--profile", "digits"]) == 0
    assert capsys.readouterr().out.startswith("xxs (input profile digits,")


def test_bad_patch_sizes():
    raw = _raw("xxs")
    raw["input_profiles"]["cifar10-p1"]["patch_sizes"] = [2, 2, 1]
    with pytest.raises(ValueError, match="patch_sizes must be 4 positive integers"):
        space_from_dict(raw, input_profile="cifar10-p1")
    raw["input_profiles"]["cifar10-p1"]["patch_sizes"] = [2, 3, 1, 1]  # a 4x4 map in 3x3 patches
    with pytest.raises(ValueError, match="4x4 map at transformer stage 2, not divisible by the 3x3 patch"):
        space_from_dict(raw, input_profile="cifar10-p1")
