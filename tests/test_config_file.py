"""Tests of the .cfg reader (znn.formats.config_file)."""
import textwrap
import warnings

import pytest

from znn.errors import SpecError
from znn.formats.config_file import (ConfigWarning, parse_bool, parse_range, parse_vector,
                                     read_config, read_ini)

# An equivalent of the example config.cfg shipped with the original (python/config.cfg)
EXAMPLE = """\
[parameters]
# general
# specification file of network architecture
fnet_spec = ../networks/N4.znn
# file of data spec
fdata_spec = ../dataset/test/dataset.spec
# number of threads. if <=0, the thread number will be equal to
# the number of concurrent threads supported by the implementation.
num_threads = 0
dtype = float32
out_type = boundary
logging = no

# train
train_net_prefix = ../experiments/piriform/N4/net
train_range = 2
test_range = 1
train_outsz = 1,100,100
train_conv_mode = fft
cost_fn = auto
is_malis = no
malis_norm_type = none
eta = 0.01
anneal_factor = 0.997
Num_iter_per_annealing = 100
momentum = 0.9
weight_decay = 0
is_data_aug = yes
is_bd_mirror = yes
rebalance_mode = global
is_stdio = yes
is_debug = no
is_check = no
Num_iter_per_show = 100
Num_iter_per_test = 200
test_num = 10
Num_iter_per_save = 1000
Max_iter = 200000

# forward
forward_range = 1
forward_net = ../experiments/piriform/N4/net_current.h5
forward_conv_mode = fft
forward_outsz = 5,100,100
output_prefix = ../experiments/piriform/N4/out
"""


@pytest.fixture
def tree(tmp_path):
    """A python/ folder next to networks/ and dataset/test/ as in the original repository."""
    (tmp_path / "networks").mkdir()
    (tmp_path / "networks" / "N4.znn").write_text("# net\n")
    (tmp_path / "dataset" / "test").mkdir(parents=True)
    (tmp_path / "dataset" / "test" / "dataset.spec").write_text("[sample1]\ninput = 1\n")
    (tmp_path / "python").mkdir()
    return tmp_path


def write(folder, text, name="run.cfg"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = "[parameters]\nfnet_spec = net.znn\nout_type = boundary\n"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "net.znn").write_text("# net\n")
    return tmp_path


def test_example_config_parses(tree):
    cfg = read_config(write(tree / "python", EXAMPLE, "config.cfg"))
    assert cfg.fnet_spec == tree / "networks" / "N4.znn"  # normalised: no "python/.."
    assert cfg.fnet_spec.resolve() == (tree / "networks" / "N4.znn").resolve()
    assert cfg.fdata_spec.resolve() == (tree / "dataset/test/dataset.spec").resolve()
    assert cfg.train_net_prefix.resolve() == (tree / "experiments/piriform/N4/net").resolve()
    assert cfg.output_prefix.name == "out" and cfg.forward_net.name == "net_current.h5"
    assert cfg.folder == (tree / "python").resolve()
    assert cfg.out_type == "boundary" and cfg.cost_fn == "softmax_loss"
    assert cfg.dtype == "float32" and cfg.num_threads == 0 and cfg.threads >= 1
    assert cfg.train_range == [2] and cfg.test_range == [1] and cfg.forward_range == [1]
    assert cfg.train_outsz == (1, 100, 100) and cfg.forward_outsz == (5, 100, 100)
    assert cfg.eta == 0.01 and cfg.anneal_factor == 0.997 and cfg.momentum == 0.9
    assert cfg.num_iter_per_annealing == 100 and cfg.num_iter_per_test == 200
    assert cfg.max_iter == 200000 and cfg.num_iter_per_save == 1000 and cfg.test_num == 10
    assert cfg.is_data_aug and cfg.is_bd_mirror and cfg.is_stdio
    assert not (cfg.is_debug or cfg.is_check or cfg.is_malis or cfg.logging)
    assert cfg.rebalance_mode == "global" and cfg.malis_norm_type == "none"
    assert cfg.train_conv_mode == "fft" and cfg.forward_conv_mode == "fft"
    assert cfg.raw["num_iter_per_show"] == "100" and cfg.lines["fnet_spec"] == 4


def test_defaults(folder):
    cfg = read_config(write(folder, MINIMAL))
    assert (cfg.eta, cfg.anneal_factor, cfg.momentum, cfg.weight_decay) == (0.01, 1, 0, 0)
    assert cfg.train_outsz == (1, 100, 100)
    assert (cfg.num_iter_per_show, cfg.num_iter_per_test, cfg.test_num) == (100, 500, 10)
    assert (cfg.num_iter_per_save, cfg.num_iter_per_annealing, cfg.max_iter) == (1000, 100,
                                                                                 400000)
    assert cfg.cost_fn == "softmax_loss" and cfg.num_threads == 0 and cfg.dtype == "float32"
    assert cfg.rebalance_mode == "none" and cfg.malis_norm_type == "none"
    assert cfg.train_conv_mode == "optimize" and cfg.forward_conv_mode == "optimize"
    assert cfg.seed is None and cfg.fdata_spec is None and cfg.train_range is None
    assert not any([cfg.is_data_aug, cfg.is_bd_mirror, cfg.is_malis, cfg.is_stdio,
                    cfg.is_debug, cfg.is_check, cfg.is_visual, cfg.is_constrained_malis])


def test_case_booleans_comments(folder):
    cfg = read_config(write(folder, MINIMAL + "IS_DATA_AUG = On ; inline\nis_bd_mirror: TRUE\n"
                            "is_debug = 0 # off\nis_stdio = 1\nSeed = 7\n"))
    assert cfg.is_data_aug and cfg.is_bd_mirror and not cfg.is_debug and cfg.is_stdio
    assert cfg.seed == 7


def test_affinity_cost_and_explicit_costs(folder):
    base = "[parameters]\nfnet_spec = net.znn\nout_type = affinity\n"
    assert read_config(write(folder, base)).cost_fn == "binomial_cross_entropy"
    for text, name in [("square", "square_loss"), ("square-square", "square_square_loss"),
                       ("binomial_cross_entropy", "binomial_cross_entropy"),
                       ("softmax", "softmax_loss")]:
        assert read_config(write(folder, base + f"cost_fn = {text}\n")).cost_fn == name


@pytest.mark.parametrize("key, value, expect", [
    ("train_net", "a/net.h5", "a/net"),
    ("train_save_net", "b/net.h5", "b/net"),
])
def test_legacy_prefix(folder, key, value, expect):
    cfg = read_config(write(folder, MINIMAL + f"{key} = {value}\n"))
    assert cfg.train_net_prefix == folder.resolve() / expect


def test_prefix_precedence(folder):
    cfg = read_config(write(folder, MINIMAL + "train_net = x.h5\ntrain_net_prefix = y\n"
                            "train_save_net = z.h5\n"))
    assert cfg.train_net_prefix.name == "y"


def test_legacy_conv_modes(folder):
    cfg = read_config(write(folder, MINIMAL + "is_train_optimize = yes\n"
                            "is_forward_optimize = no\n"))
    assert (cfg.train_conv_mode, cfg.forward_conv_mode) == ("optimize", "direct")
    cfg = read_config(write(folder, MINIMAL + "is_train_optimize = yes\nforce_fft = yes\n"))
    assert (cfg.train_conv_mode, cfg.forward_conv_mode) == ("fft", "fft")
    cfg = read_config(write(folder, MINIMAL + "force_fft = yes\ntrain_conv_mode = direct\n"
                            "forward_conv_mode = Optimize\n"))
    assert (cfg.train_conv_mode, cfg.forward_conv_mode) == ("direct", "optimize")


def test_legacy_rebalance(folder):
    assert read_config(write(folder, MINIMAL + "is_rebalance = yes\n")).rebalance_mode == "global"
    assert read_config(write(folder, MINIMAL + "is_patch_rebalance = yes\n")).rebalance_mode \
        == "patch"
    assert read_config(write(folder, MINIMAL + "is_rebalance = yes\nrebalance_mode = none\n")
                       ).rebalance_mode == "none"


def test_dtype_spellings(folder):
    for text, dt in [("single", "float32"), ("double", "float64"), ("float64", "float64")]:
        assert read_config(write(folder, MINIMAL + f"dtype = {text}\n")).dtype == dt


def test_overrides(folder):
    path = write(folder, MINIMAL + "eta = 0.5\n")
    cfg = read_config(path, {"eta": "0.25", "DTYPE": "double", "max_iter": "10"})
    assert cfg.eta == 0.25 and cfg.dtype == "float64" and cfg.max_iter == 10
    with pytest.raises(SpecError, match="override") as info:
        read_config(path, {"momentum": "2"})
    assert info.value.key == "momentum"


def test_require(folder):
    cfg = read_config(write(folder, MINIMAL + "train_range = 1\n"))
    cfg.require("train_range", "fnet_spec")
    with pytest.raises(SpecError, match="forward_net") as info:
        cfg.require("train_range", "forward_net")
    assert info.value.key == "forward_net" and str(folder) in str(info.value)


def test_unknown_key_warns_with_suggestion(folder):
    with pytest.warns(ConfigWarning, match=r"run.cfg:4: unknown key 'num_iter_per_shwo'.*"
                                           r"num_iter_per_show"):
        read_config(write(folder, MINIMAL + "Num_iter_per_shwo = 5\n"))


def test_data_sections_in_cfg_become_the_spec(folder):
    path = write(folder, MINIMAL + "[image1]\nfnames = a.tif\n")
    assert read_config(path).fdata_spec == path.resolve()
    with pytest.warns(ConfigWarning, match=r"section \[other\]"):
        read_config(write(folder, MINIMAL + "[other]\nx = 1\n"))


@pytest.mark.parametrize("extra, key, line", [
    ("eta = fast", "eta", 4),
    ("momentum = 1.5", "momentum", 4),
    ("anneal_factor = -0.1", "anneal_factor", 4),
    ("weight_decay = 2", "weight_decay", 4),
    ("train_outsz = 1,100", "train_outsz", 4),
    ("forward_outsz = 1,0,100", "forward_outsz", 4),
    ("train_range = 1-x", "train_range", 4),
    ("test_range = 3-1", "test_range", 4),
    ("dtype = float16", "dtype", 4),
    ("is_data_aug = maybe", "is_data_aug", 4),
    ("rebalance_mode = sometimes", "rebalance_mode", 4),
    ("malis_norm_type = constrain", "malis_norm_type", 4),
    ("cost_fn = hinge", "cost_fn", 4),
    ("train_conv_mode = gpu", "train_conv_mode", 4),
    ("num_iter_per_show = 0", "num_iter_per_show", 4),
    ("max_iter = ten", "max_iter", 4),
    ("test_num = -1", "test_num", 4),
    ("seed = -3", "seed", 4),
    ("fdata_spec = missing.spec", "fdata_spec", 4),
])
def test_bad_values(folder, extra, key, line):
    path = write(folder, MINIMAL + extra + "\n")
    with pytest.raises(SpecError) as info:
        read_config(path)
    err = info.value
    assert (err.key, err.line) == (key, line)
    assert str(err).startswith(f"{path.resolve()}:{line}: ") and key in str(err)
    assert "\n" not in str(err)


def test_semantic_not_supported(folder):
    with pytest.raises(SpecError, match="not supported") as info:
        read_config(write(folder, "[parameters]\nfnet_spec = net.znn\nout_type = semantic\n"))
    assert info.value.line == 3 and info.value.key == "out_type"


@pytest.mark.parametrize("text, key", [
    ("[parameters]\nout_type = boundary\n", "fnet_spec"),
    ("[parameters]\nfnet_spec = net.znn\n", "out_type"),
])
def test_missing_required(folder, text, key):
    with pytest.raises(SpecError, match=key) as info:
        read_config(write(folder, text))
    assert info.value.key == key


def test_missing_fnet_file(tmp_path):
    path = write(tmp_path, "[parameters]\nout_type = boundary\nfnet_spec = nope.znn\n")
    with pytest.raises(SpecError, match="not found") as info:
        read_config(path)
    assert (info.value.line, info.value.key) == (3, "fnet_spec")


@pytest.mark.parametrize("text, line, match", [
    ("[parameters]\nfnet_spec = a\nfnet_spec = b\n", 3, "duplicate key"),
    ("[parameters]\n[parameters]\n", 2, "duplicate section"),
    ("eta = 1\n[parameters]\n", 1, "before any"),
    ("[parameters]\njust words\n", 2, "cannot parse"),
])
def test_ini_errors(tmp_path, text, line, match):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=match) as info:
        read_config(path)
    assert info.value.line == line and str(info.value).startswith(f"{path.resolve()}:{line}:")


def test_no_parameters_section_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"no \[parameters\]"):
        read_config(write(tmp_path, "[image1]\nfnames = a\n"))
    with pytest.raises(SpecError, match="file not found"):
        read_config(tmp_path / "absent.cfg")


def test_ini_continuation_and_comments(tmp_path):
    path = write(tmp_path, "[Image1]\nfnames = a.tif,\n    b.tif  # second\n# c.tif\n\n"
                           "pp_types = none\n")
    sec = read_ini(path)["image1"]
    assert sec.entries["fnames"].value == "a.tif,\nb.tif"
    assert sec.entries["pp_types"].line == 6


def test_value_parsers():
    assert parse_range("1-3,6") == [1, 2, 3, 6]
    assert parse_range(" 6, 2-3 ,2") == [2, 3, 6]
    for bad in ("", "a", "1-", "1--2", "1.5"):
        with pytest.raises(ValueError):
            parse_range(bad)
    assert parse_vector("1, 2,3") == (1, 2, 3)
    for bad in ("1,2", "1,2,3,4", "0,1,1", "a,b,c"):
        with pytest.raises(ValueError):
            parse_vector(bad)
    assert parse_bool("ON") and not parse_bool("off")
    with pytest.raises(ValueError):
        parse_bool("2")


def test_no_warning_for_known_keys(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_config(write(tree / "python", EXAMPLE + "is_visual = no\nis_constrained_malis = no\n"
                          "is_rebalance = no\nis_patch_rebalance = no\nseed = 3\n"))
