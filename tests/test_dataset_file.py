"""Tests of the .spec reader (znn.formats.dataset_file)."""
import pytest

from znn.errors import SpecError
from znn.formats.dataset_file import read_dataset_spec

# an equivalent of the original's dataset/ISBI2012/dataset.spec
ISBI = """\
# samples example
[image1]
fnames = ../dataset/ISBI2012/train-volume.tif
pp_types = standard2D
is_auto_crop = yes

[label1]
fnames = ../dataset/ISBI2012/train-labels.tif
pp_types = auto
is_auto_crop = yes
fmasks =

[sample1]
input = 1
output = 1

[image2]
fnames = ../dataset/ISBI2012/test-volume.tif
pp_types = standard2D
is_auto_crop = yes

[sample2]
input = 2
"""


def write(tmp_path, text, name="data.spec"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_isbi_example(tmp_path):
    (tmp_path / "specs").mkdir()
    spec = read_dataset_spec(write(tmp_path / "specs", ISBI))
    folder = (tmp_path / "specs").resolve()
    assert spec.path == folder / "data.spec"
    assert spec.images[1].fnames == [folder / "../dataset/ISBI2012/train-volume.tif"]
    assert spec.images[1].pp_types == ["standard2D"] and spec.images[1].is_auto_crop
    assert spec.labels[1].fmasks == [] and spec.labels[1].pp_types == ["auto"]
    assert spec.samples[1].inputs == {"input": 1} and spec.samples[1].outputs == {"output": 1}
    assert spec.samples[2].inputs == {"input": 2} and spec.samples[2].outputs == {}
    assert spec.samples[1].image_id("input") == 1 and spec.samples[1].label_id("Output") == 1


def test_multiple_files_masks_and_node_names(tmp_path):
    text = """\
[image1]
fnames = a.h5,
         /abs/b.h5:/raw
pp_types = standard2D, None
[image2]
fnames = c.tif
[label3]
fnames = l1.tif
    l2.tif
pp_types = binary_class
fmask = m1.tif, m2.tif
is_auto_crop = no
[sample1]
input1 = 1
input2 = 2
output1 = 3
raw = 2
"""
    spec = read_dataset_spec(write(tmp_path, text))
    root = tmp_path.resolve()
    img = spec.images[1]
    assert img.fnames == [root / "a.h5", root / "/abs/b.h5:/raw"]
    assert str(img.fnames[1]) == "/abs/b.h5:/raw"
    assert img.pp_types == ["standard2D", "none"] and not img.is_auto_crop
    assert spec.images[2].pp_types == ["none"]
    lab = spec.labels[3]
    assert lab.fnames == [root / "l1.tif", root / "l2.tif"]
    assert lab.fmasks == [root / "m1.tif", root / "m2.tif"]
    assert lab.pp_types == ["binary_class", "binary_class"]
    s = spec.samples[1]
    assert s.inputs == {"input1": 1, "input2": 2} and s.outputs == {"output1": 3}
    assert s.other == {"raw": 2} and s.image_id("raw") == 2 and s.label_id("nothing") is None


def test_parameters_section_is_skipped(tmp_path):
    spec = read_dataset_spec(write(tmp_path, "[parameters]\neta = 1\n[image1]\nfnames = a\n"
                                             "[sample1]\ninput = 1\n"))
    assert list(spec.images) == [1] and list(spec.labels) == []


@pytest.mark.parametrize("text, line, key, match", [
    ("[image1]\nfnames = a\ncolour = red\n[sample1]\ninput = 1\n", 3, "colour", "unknown key"),
    ("[image1]\nfnames = a\nfmasks = m\n[sample1]\ninput = 1\n", 3, "fmasks", "unknown key"),
    ("[image1]\nfnames = a\npp_types = standard4D\n[sample1]\ninput = 1\n", 3, "pp_types",
     "bad pp_type"),
    ("[label1]\nfnames = a\npp_types = standard2D\n[sample1]\noutput = 1\n", 3, "pp_types",
     "bad pp_type"),
    ("[image1]\nfnames = a, b\npp_types = none, none, none\n[sample1]\ninput = 1\n", 3,
     "pp_types", "2 file"),
    ("[image1]\nfnames = a\nis_auto_crop = perhaps\n[sample1]\ninput = 1\n", 3, "is_auto_crop",
     "is_auto_crop"),
    ("[image1]\npp_types = none\n[sample1]\ninput = 1\n", 1, "fnames", "needs 'fnames'"),
    ("[image1]\nfnames =\n[sample1]\ninput = 1\n", 2, "fnames", "needs 'fnames'"),
    ("[label1]\nfnames = a, b\nfmasks = m\n[sample1]\noutput = 1\n", 3, "fmasks", "mask"),
    ("[label1]\nfnames = a\nfmasks = m\nfmask = n\n[sample1]\noutput = 1\n", 4, "fmask",
     "both"),
    ("[image1]\nfnames = a\n[sample1]\ninput = 2\n", 4, "input", r"\[image2\]"),
    ("[image1]\nfnames = a\n[sample1]\ninput = 1\noutput = 1\n", 5, "output", r"\[label1\]"),
    ("[image1]\nfnames = a\n[sample1]\ninput = 1\nraw = 9\n", 5, "raw", "neither"),
    ("[image1]\nfnames = a\n[sample1]\ninput = one\n", 4, "input", "positive"),
    ("[image1]\nfnames = a\n[sample1]\ninput = 0\n", 4, "input", "positive"),
    ("[image1]\nfnames = a\n[data]\nx = 1\n", 3, None, "unknown section"),
    ("[image1]\nfnames = a\n[sample1]\n", 3, None, "empty"),
    ("[image1]\nfnames = a\nfnames = b\n[sample1]\ninput = 1\n", 3, "fnames", "duplicate"),
])
def test_errors(tmp_path, text, line, key, match):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=match) as info:
        read_dataset_spec(path)
    err = info.value
    assert (err.line, err.key) == (line, key)
    assert str(err).startswith(f"{path.resolve()}:{line}: ") and "\n" not in str(err)


def test_no_samples_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"no \[sampleN\]"):
        read_dataset_spec(write(tmp_path, "[image1]\nfnames = a\n"))
    with pytest.raises(SpecError, match="file not found"):
        read_dataset_spec(tmp_path / "nope.spec")
