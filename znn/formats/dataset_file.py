"""The .spec data description: [imageN], [labelN] and [sampleN] sections."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from znn.errors import SpecError
from znn.formats.config_file import parse_bool, read_ini

__all__ = ["DatasetSpec", "ImageSpec", "LabelSpec", "SampleSpec", "IMAGE_PP_TYPES",
           "LABEL_PP_TYPES", "read_dataset_spec"]

IMAGE_PP_TYPES = ("standard2D", "standard3D", "symetric_rescale", "symmetric_rescale", "none")
LABEL_PP_TYPES = ("one_class", "binary_class", "affinity", "none", "auto")


@dataclass
class ImageSpec:
    """An [imageN] section: one volume per file (one channel each) and its preprocessing."""

    fnames: list[Path]
    pp_types: list[str]
    is_auto_crop: bool = False
    line: int = 0


@dataclass
class LabelSpec:
    """A [labelN] section; `pp_types` are informational (the transform follows out_type)."""

    fnames: list[Path]
    pp_types: list[str]
    is_auto_crop: bool = False
    fmasks: list[Path] = field(default_factory=list)
    line: int = 0


@dataclass
class SampleSpec:
    """A [sampleN] section: network node name -> image id (inputs) or label id (outputs).

    Keys starting with 'input' are input nodes and keys starting with 'output' are
    output nodes; any other key is a node name whose role the network decides, kept in
    `other` (its id exists as an image or a label).
    """

    inputs: dict[str, int]
    outputs: dict[str, int]
    other: dict[str, int] = field(default_factory=dict)
    line: int = 0

    def image_id(self, node: str) -> int | None:
        """The image id bound to input node `node`, or None."""
        node = node.lower()  # .spec keys are case-insensitive
        return self.inputs.get(node, self.other.get(node))

    def label_id(self, node: str) -> int | None:
        """The label id bound to output node `node`, or None."""
        node = node.lower()
        return self.outputs.get(node, self.other.get(node))


@dataclass
class DatasetSpec:
    """All sections of a .spec file, by id; `path` is the file it came from."""

    path: Path
    images: dict[int, ImageSpec]
    labels: dict[int, LabelSpec]
    samples: dict[int, SampleSpec]

    def input_image(self, sid: int, node: str) -> ImageSpec:
        """The [imageN] that [sample`sid`] binds to the network's input node `node`;
        SpecError at the sample's line when it binds none, or at the [imageN] line when one
        of its files does not exist."""
        return self._bound(sid, node, "image", "input", self.samples[sid].image_id(node))

    def output_label(self, sid: int, node: str) -> LabelSpec:
        """The [labelN] bound to the network's output node `node`, as input_image."""
        return self._bound(sid, node, "label", "output", self.samples[sid].label_id(node))

    def _bound(self, sid, node, kind, role, num):
        sections = self.images if kind == "image" else self.labels
        if num is None or num not in sections:
            raise SpecError(f"[sample{sid}] binds no [{kind}N] to the network's {role} node "
                            f"'{node}' (add '{node} = N')", path=self.path,
                            line=self.samples[sid].line, key=node)
        from znn.formats.volumes import split_h5_path

        sec = sections[num]
        for key in ("fnames", "fmasks"):
            for fname in getattr(sec, key, ()):
                if not split_h5_path(fname)[0].exists():  # file.h5:/dataset names file.h5
                    raise SpecError(f"[{kind}{num}] {key}: {fname} does not exist",
                                    path=self.path, line=sec.line, key=key)
        return sec


_SECTION = re.compile(r"(image|label|sample)(\d+)")


def _split_files(text):
    """File lists: one per line and/or separated by commas."""
    return [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]


def _resolve(folder, name):
    return folder / Path(name).expanduser()


def read_dataset_spec(path) -> DatasetSpec:
    """Read a .spec file; raises SpecError "file:line: ..." naming the bad key.

    Relative file names are resolved against the spec file's folder.  `fmask` is accepted
    for `fmasks`; an empty `fmasks` means no mask.  A [parameters] section (a .cfg that
    holds its own data sections, as old ZNN configs did) is skipped.  Files are not
    opened here.
    """
    path = Path(path).expanduser().resolve()
    folder = path.parent
    sections = read_ini(path)
    images: dict[int, ImageSpec] = {}
    labels: dict[int, LabelSpec] = {}
    samples: dict[int, SampleSpec] = {}
    for name, sec in sections.items():
        if name == "parameters":
            continue
        m = _SECTION.fullmatch(name)
        if not m:
            raise SpecError(f"unknown section [{name}] (expected [imageN], [labelN] or "
                            "[sampleN])", path=path, line=sec.line)
        kind, num = m.group(1), int(m.group(2))
        if kind == "sample":
            samples[num] = _sample(path, sec)
        else:
            volume = _volume(path, folder, sec, kind)
            (images if kind == "image" else labels)[num] = volume
    if not samples:
        raise SpecError("no [sampleN] section", path=path)
    for sec_name, sample in samples.items():
        entries = sections[f"sample{sec_name}"].entries
        for node, num in sample.inputs.items():
            if num not in images:
                raise SpecError(f"[sample{sec_name}] input '{node}' names [image{num}], which "
                                "does not exist", path=path, line=entries[node].line, key=node)
        for node, num in sample.outputs.items():
            if num not in labels:
                raise SpecError(f"[sample{sec_name}] output '{node}' names [label{num}], which "
                                "does not exist", path=path, line=entries[node].line, key=node)
        for node, num in sample.other.items():
            if num not in images and num not in labels:
                raise SpecError(f"[sample{sec_name}] node '{node}' names neither [image{num}] "
                                f"nor [label{num}]", path=path, line=entries[node].line, key=node)
    return DatasetSpec(path=path, images=images, labels=labels, samples=samples)


def _volume(path, folder, sec, kind):
    allowed = ("fnames", "pp_types", "is_auto_crop")
    if kind == "label":
        allowed += ("fmasks", "fmask")
    entries = sec.entries
    for key, entry in entries.items():
        if key not in allowed:
            raise SpecError(f"unknown key '{key}' in [{sec.name}] (allowed: {', '.join(allowed)})",
                            path=path, line=entry.line, key=key)
    if "fmask" in entries and "fmasks" in entries:
        raise SpecError(f"both 'fmask' and 'fmasks' in [{sec.name}]", path=path,
                        line=entries["fmask"].line, key="fmask")
    if "fnames" not in entries or not _split_files(entries["fnames"].value):
        line = entries["fnames"].line if "fnames" in entries else sec.line
        raise SpecError(f"[{sec.name}] needs 'fnames' (at least one file)", path=path, line=line,
                        key="fnames")
    fnames = [_resolve(folder, f) for f in _split_files(entries["fnames"].value)]

    valid = IMAGE_PP_TYPES if kind == "image" else LABEL_PP_TYPES
    pp_types = ["none"]
    if "pp_types" in entries:
        entry = entries["pp_types"]
        pp_types = []
        for token in _split_files(entry.value) or ["none"]:
            token = "none" if token.lower() == "none" else token
            if token not in valid:
                raise SpecError(f"bad pp_type '{token}' in [{sec.name}] (allowed: "
                                f"{', '.join(valid)})", path=path, line=entry.line, key="pp_types")
            pp_types.append(token)
        if len(pp_types) not in (1, len(fnames)):
            raise SpecError(f"[{sec.name}] has {len(fnames)} file(s) but {len(pp_types)} pp_types",
                            path=path, line=entry.line, key="pp_types")
    if len(pp_types) == 1:
        pp_types = pp_types * len(fnames)

    auto_crop = False
    if "is_auto_crop" in entries:
        try:
            auto_crop = parse_bool(entries["is_auto_crop"].value)
        except ValueError as exc:
            raise SpecError(f"bad value for 'is_auto_crop': {exc}", path=path,
                            line=entries["is_auto_crop"].line, key="is_auto_crop") from None
    if kind == "image":
        return ImageSpec(fnames, pp_types, auto_crop, sec.line)
    mkey = "fmasks" if "fmasks" in entries else "fmask"
    fmasks = []
    if mkey in entries:
        fmasks = [_resolve(folder, f) for f in _split_files(entries[mkey].value)]
        if fmasks and len(fmasks) != len(fnames):
            raise SpecError(f"[{sec.name}] has {len(fnames)} label file(s) but {len(fmasks)} "
                            "mask file(s)", path=path, line=entries[mkey].line, key=mkey)
    return LabelSpec(fnames, pp_types, auto_crop, fmasks, sec.line)


def _sample(path, sec):
    inputs, outputs, other = {}, {}, {}
    if not sec.entries:
        raise SpecError(f"[{sec.name}] is empty (expected e.g. 'input = 1')", path=path,
                        line=sec.line)
    for key, entry in sec.entries.items():
        text = entry.value.strip()
        if not re.fullmatch(r"\d+", text) or int(text) < 1:
            raise SpecError(f"[{sec.name}] '{key}' must be a positive section number, got "
                            f"'{text}'", path=path, line=entry.line, key=key)
        target = inputs if key.startswith("input") else outputs if key.startswith("output") \
            else other
        target[key] = int(text)
    return SampleSpec(inputs, outputs, other, sec.line)
