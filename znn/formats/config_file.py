"""The .cfg run configuration: an INI reader with line numbers and the typed RunConfig."""
from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from znn.errors import SpecError

__all__ = [
    "ConfigWarning", "IniEntry", "IniSection", "RunConfig", "parse_bool", "parse_range",
    "parse_vector", "read_config", "read_ini",
]


class ConfigWarning(UserWarning):
    """An unknown or ignored key in a .cfg file (a likely typo)."""


# --------------------------------------------------------------------------------------------
# INI reading (ConfigParser-compatible enough, but keeps the line of every key)
# --------------------------------------------------------------------------------------------

@dataclass
class IniEntry:
    """One `key = value` of a section; continuation lines are joined with newlines."""

    key: str
    value: str
    line: int


@dataclass
class IniSection:
    """A `[name]` section (name lower-cased) with its entries by lower-cased key."""

    name: str
    line: int
    entries: dict[str, IniEntry] = field(default_factory=dict)


_COMMENT = re.compile(r"(^|\s)[#;].*$")
_HEADER = re.compile(r"^\[\s*([^\]]+?)\s*\]\s*$")


def _strip_comment(text):
    """Drop an inline `# ...` / `; ...` comment (only after whitespace: `a#b` stays)."""
    return _COMMENT.sub("", text).strip()


def read_ini(path) -> dict[str, IniSection]:
    """Read an INI file into sections, keeping the line number of every key.

    Keys and section names are case-insensitive (lower-cased).  Full-line and inline
    comments (`#`, `;` after whitespace) are removed.  An indented line continues the
    previous value (joined with a newline); a blank line ends it.  Raises SpecError for
    a missing file, a duplicate section or key, a key outside a section or a line that
    is neither.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the file: {exc}", path=path) from None
    sections: dict[str, IniSection] = {}
    current: IniSection | None = None
    last: IniEntry | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            last = None
            continue
        if stripped[0] in "#;":
            continue
        if raw[0] in " \t" and last is not None:
            extra = _strip_comment(stripped)
            if extra:
                last.value = f"{last.value}\n{extra}" if last.value else extra
            continue
        header = _HEADER.match(stripped)
        if header:
            name = header.group(1).lower()
            if name in sections:
                raise SpecError(f"duplicate section [{name}] (first on line {sections[name].line})",
                                path=path, line=lineno)
            current = sections[name] = IniSection(name, lineno)
            last = None
            continue
        cut = [i for i in (stripped.find("="), stripped.find(":")) if i > 0]
        if not cut:
            raise SpecError(f"cannot parse line '{stripped}' (expected 'key = value' or [section])",
                            path=path, line=lineno)
        key = stripped[:min(cut)].strip().lower()
        value = _strip_comment(stripped[min(cut) + 1:])
        if current is None:
            raise SpecError(f"key '{key}' appears before any [section]", path=path, line=lineno,
                            key=key)
        if key in current.entries:
            raise SpecError(f"duplicate key '{key}' in [{current.name}] (first on line "
                            f"{current.entries[key].line})", path=path, line=lineno, key=key)
        last = current.entries[key] = IniEntry(key, value, lineno)
    return sections


# --------------------------------------------------------------------------------------------
# Value parsers (raise ValueError; read_config turns it into SpecError at the key's line)
# --------------------------------------------------------------------------------------------

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off"}


def parse_bool(text: str) -> bool:
    """yes/no, true/false, 1/0, on/off (any case)."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected yes/no, true/false, on/off or 1/0, got '{text}'")


def parse_range(text: str) -> list[int]:
    """Sample ids such as `1-3,6` -> [1, 2, 3, 6] (sorted, unique); a bad token raises."""
    ids: set[int] = set()
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if not m:
            raise ValueError(f"invalid token '{token}' in the range '{text}' (use e.g. 1-3,6)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"invalid token '{token}' in the range '{text}' (empty range)")
        ids.update(range(lo, hi + 1))
    if not ids:
        raise ValueError("empty range")
    return sorted(ids)


def parse_vector(text: str) -> tuple[int, int, int]:
    """`z,y,x`: exactly three positive integers."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        vec = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected three positive integers z,y,x, got '{text}'") from None
    if len(vec) != 3 or min(vec) < 1:
        raise ValueError(f"expected three positive integers z,y,x, got '{text}'")
    return vec


def _parse_int(text):
    return int(text.strip())


def _parse_float(text):
    return float(text.strip())


def _conv_mode(text):
    """Substring match as the original: 'fft' before 'optimize'; anything else is direct."""
    low = text.strip().lower()
    if "fft" in low:
        return "fft"
    if "optimi" in low:
        return "optimize"
    if "direct" in low:
        return "direct"
    raise ValueError(f"expected fft, direct or optimize, got '{text}'")


_DTYPES = {"float32": "float32", "single": "float32", "float64": "float64", "double": "float64"}


def _dtype(text):
    low = text.strip().lower()
    if low not in _DTYPES:
        raise ValueError(f"expected float32, float64, single or double, got '{text}'")
    return _DTYPES[low]


def _out_type(text):
    low = text.strip().lower()
    if "boundary" in low:
        return "boundary"
    if "affin" in low:
        return "affinity"
    if "semantic" in low:
        raise ValueError("out_type 'semantic' is not supported (use boundary or affinity)")
    raise ValueError(f"expected boundary or affinity, got '{text}'")


def _choice(*allowed):
    def parse(text):
        low = text.strip().lower()
        if low not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got '{text}'")
        return low
    return parse


def _cost_fn(text):
    low = text.strip().lower()
    for sub, name in (("auto", "auto"), ("square-square", "square_square_loss"),
                      ("square_square", "square_square_loss"), ("square", "square_loss"),
                      ("binomial", "binomial_cross_entropy"), ("softmax", "softmax_loss")):
        if sub in low:
            return name
    raise ValueError(f"unknown cost function '{text}' (use auto, square_loss, "
                     "binomial_cross_entropy or softmax_loss)")


def _prefix(text):
    # legacy train_net / train_save_net values carry a '.h5' that the prefix must not have
    return text.strip().replace(".h5", "")


# key -> (field name, parser, kind) where kind 'path' means resolve relative to the cfg folder
_KEYS: dict[str, tuple[str, object, str]] = {
    "fnet_spec": ("fnet_spec", str, "path"),
    "fdata_spec": ("fdata_spec", str, "path"),
    "num_threads": ("num_threads", _parse_int, ""),
    "dtype": ("dtype", _dtype, ""),
    "out_type": ("out_type", _out_type, ""),
    "logging": ("logging", parse_bool, ""),
    "train_net_prefix": ("train_net_prefix", str, "path"),
    "train_net": ("train_net_prefix", _prefix, "path"),
    "train_save_net": ("train_net_prefix", _prefix, "path"),
    "train_range": ("train_range", parse_range, ""),
    "test_range": ("test_range", parse_range, ""),
    "eta": ("eta", _parse_float, ""),
    "anneal_factor": ("anneal_factor", _parse_float, ""),
    "momentum": ("momentum", _parse_float, ""),
    "weight_decay": ("weight_decay", _parse_float, ""),
    "train_outsz": ("train_outsz", parse_vector, ""),
    "is_train_optimize": ("train_conv_mode", parse_bool, ""),
    "is_forward_optimize": ("forward_conv_mode", parse_bool, ""),
    "force_fft": ("force_fft", parse_bool, ""),
    "train_conv_mode": ("train_conv_mode", _conv_mode, ""),
    "forward_conv_mode": ("forward_conv_mode", _conv_mode, ""),
    "is_data_aug": ("is_data_aug", parse_bool, ""),
    "is_bd_mirror": ("is_bd_mirror", parse_bool, ""),
    "is_rebalance": ("rebalance_mode", parse_bool, ""),
    "is_patch_rebalance": ("rebalance_mode", parse_bool, ""),
    "rebalance_mode": ("rebalance_mode", _choice("none", "global", "patch"), ""),
    "is_malis": ("is_malis", parse_bool, ""),
    "malis_norm_type": ("malis_norm_type", _choice("none", "frac", "num", "pair"), ""),
    "is_constrained_malis": ("is_constrained_malis", parse_bool, ""),
    "is_visual": ("is_visual", parse_bool, ""),
    "is_stdio": ("is_stdio", parse_bool, ""),
    "is_debug": ("is_debug", parse_bool, ""),
    "is_check": ("is_check", parse_bool, ""),
    "cost_fn": ("cost_fn", _cost_fn, ""),
    "num_iter_per_show": ("num_iter_per_show", _parse_int, ""),
    "num_iter_per_test": ("num_iter_per_test", _parse_int, ""),
    "test_num": ("test_num", _parse_int, ""),
    "num_iter_per_save": ("num_iter_per_save", _parse_int, ""),
    "num_iter_per_annealing": ("num_iter_per_annealing", _parse_int, ""),
    "max_iter": ("max_iter", _parse_int, ""),
    "forward_range": ("forward_range", parse_range, ""),
    "forward_net": ("forward_net", str, "path"),
    "forward_outsz": ("forward_outsz", parse_vector, ""),
    "output_prefix": ("output_prefix", str, "path"),
    "seed": ("seed", _parse_int, ""),
}

_REQUIRED = ("fnet_spec", "out_type")
_DATA_SECTION = re.compile(r"(image|label|sample)\d+")


@dataclass
class RunConfig:
    """Every setting of a .cfg file, typed, with paths resolved against the cfg folder.

    Differences from the original ZNN (§8 of the reference), deliberately fixed:
    `rebalance_mode none` means no rebalancing; the legacy `is_rebalance` /
    `is_patch_rebalance` keys work when `rebalance_mode` is absent; `forward_*` and
    `train_*` keys are only required by the command that uses them (see `require`);
    conv modes default to 'optimize' (per-layer timing); inline comments are stripped; `seed` is a new key;
    `Max_iter` need not exceed `Num_iter_per_save` (short runs are legitimate).
    """

    path: Path
    folder: Path
    raw: dict[str, str]
    lines: dict[str, int | None]
    fnet_spec: Path
    out_type: str
    fdata_spec: Path | None = None
    num_threads: int = 0
    dtype: str = "float32"
    logging: bool = False
    train_net_prefix: Path | None = None
    train_range: list[int] | None = None
    test_range: list[int] | None = None
    eta: float = 0.01
    anneal_factor: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    train_outsz: tuple[int, int, int] = (1, 100, 100)
    train_conv_mode: str = "optimize"
    forward_conv_mode: str = "optimize"
    is_data_aug: bool = False
    is_bd_mirror: bool = False
    rebalance_mode: str = "none"
    is_malis: bool = False
    malis_norm_type: str = "none"
    is_constrained_malis: bool = False
    is_visual: bool = False
    is_stdio: bool = False
    is_debug: bool = False
    is_check: bool = False
    cost_fn: str = "auto"
    num_iter_per_show: int = 100
    num_iter_per_test: int = 500
    test_num: int = 10
    num_iter_per_save: int = 1000
    num_iter_per_annealing: int = 100
    max_iter: int = 400000
    forward_range: list[int] | None = None
    forward_net: Path | None = None
    forward_outsz: tuple[int, int, int] | None = None
    output_prefix: Path | None = None
    seed: int | None = None

    @property
    def threads(self) -> int:
        """`num_threads`, with a value <= 0 meaning every core."""
        import os
        return self.num_threads if self.num_threads > 0 else (os.cpu_count() or 1)

    def check_samples(self, dspec, *keys: str) -> None:
        """Raise SpecError at the line of the first of `keys` (train_range, test_range,
        forward_range) that names a sample the .spec `dspec` has no [sampleN] for."""
        for key in keys:
            missing = [sid for sid in getattr(self, key) or [] if sid not in dspec.samples]
            if missing:
                raise SpecError(f"{key} names sample {missing[0]}, but {dspec.path} has no "
                                f"[sample{missing[0]}] (it has {sorted(dspec.samples)})"
                                f"{_override_note(self.lines, key)}",
                                path=self.path, line=self.lines.get(key), key=key)

    def require(self, *keys: str) -> None:
        """Raise SpecError naming the first of `keys` (field names) that has no value."""
        for key in keys:
            name = key.lower()
            if getattr(self, name, None) is None:
                raise SpecError(f"missing key '{name}' in [parameters] (needed for this command)",
                                path=self.path, key=name)


def _override_note(lines, key):
    """' (from an override)' when `key`'s value came from --set / -d, not the file."""
    return " (from an override)" if key in lines and lines[key] is None else ""


def _closest(key):
    match = difflib.get_close_matches(key, list(_KEYS), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def read_config(path, overrides: dict[str, str] | None = None) -> RunConfig:
    """Read a .cfg file (section [parameters]) into a validated RunConfig.

    `overrides` maps keys to value strings (from `--set key=value`, `-d`, ...) and
    replaces the file's values before validation.  Raises SpecError "file:line: ..."
    naming the key for a missing required key or a bad value; warns (ConfigWarning)
    for an unknown key, naming the closest valid one.
    """
    path = Path(path).expanduser().resolve()
    sections = read_ini(path)
    if "parameters" not in sections:
        raise SpecError("no [parameters] section", path=path)
    for name, sec in sections.items():
        if name != "parameters" and not _DATA_SECTION.fullmatch(name):
            warnings.warn(f"{path}:{sec.line}: section [{name}] is ignored", ConfigWarning,
                          stacklevel=2)
    entries = sections["parameters"].entries
    raw = {k: e.value for k, e in entries.items()}
    lines: dict[str, int | None] = {k: e.line for k, e in entries.items()}
    for key, value in (overrides or {}).items():
        key = key.strip().lower()
        raw[key], lines[key] = str(value), None
    folder = path.parent

    def fail(key, message):
        raise SpecError(f"{message}{_override_note(lines, key)}", path=path,
                        line=lines.get(key), key=key)

    values: dict[str, object] = {}
    legacy: dict[str, object] = {}
    for key, text in raw.items():
        if key not in _KEYS:
            warnings.warn(f"{path}:{lines[key] or '-'}: unknown key '{key}' is ignored"
                          f"{_closest(key)}", ConfigWarning, stacklevel=2)
            continue
        name, parse, kind = _KEYS[key]
        if not text.strip() and kind == "path":
            continue  # an empty path is the same as no key (the original's `fmasks =` style)
        try:
            value = parse(text)
        except ValueError as exc:
            fail(key, f"bad value for '{key}': {exc}")
        if kind == "path":
            value = Path(os.path.normpath(folder / Path(value).expanduser()))
        legacy[key] = value
    # precedence: train_net_prefix > train_net > train_save_net (as the original)
    for key in ("train_save_net", "train_net", "train_net_prefix"):
        if key in legacy:
            values["train_net_prefix"] = legacy[key]
    # conv modes: legacy booleans, then force_fft, then the explicit keys win
    for key, name in (("is_train_optimize", "train_conv_mode"),
                      ("is_forward_optimize", "forward_conv_mode")):
        if key in legacy:
            values[name] = "optimize" if legacy[key] else "direct"
    if legacy.get("force_fft"):
        values["train_conv_mode"] = values["forward_conv_mode"] = "fft"
    # rebalance: the legacy keys only count when rebalance_mode is absent (fixes §8.7)
    if legacy.get("is_rebalance"):
        values["rebalance_mode"] = "global"
    if legacy.get("is_patch_rebalance"):
        values["rebalance_mode"] = "patch"
    special = {"train_net_prefix", "train_net", "train_save_net", "is_train_optimize",
               "is_forward_optimize", "force_fft", "is_rebalance", "is_patch_rebalance"}
    for key, value in legacy.items():
        if key not in special:
            values[_KEYS[key][0]] = value

    for key in _REQUIRED:
        if key not in values:
            raise SpecError(f"missing required key '{key}' in [parameters]", path=path, key=key)
    for key in ("fnet_spec", "fdata_spec"):
        if key in values and not Path(values[key]).is_file():
            fail(key, f"'{key}' file not found: {values[key]}")
    if "fdata_spec" not in values and any(_DATA_SECTION.fullmatch(n) for n in sections):
        values["fdata_spec"] = path  # old style: the data sections live in the .cfg itself

    _check_ranges(values, fail)
    if values.get("cost_fn", "auto") == "auto":
        values["cost_fn"] = ("softmax_loss" if values["out_type"] == "boundary"
                             else "binomial_cross_entropy")
    return RunConfig(path=path, folder=folder, raw=raw, lines=lines, **values)


def _check_ranges(values, fail):
    """Range checks of numbers; `fail(key, message)` raises the SpecError."""
    for key in ("anneal_factor", "momentum", "weight_decay"):
        if key in values and not 0.0 <= values[key] <= 1.0:
            fail(key, f"'{key}' must be in [0, 1], got {values[key]}")
    if "eta" in values and not values["eta"] >= 0.0:
        fail("eta", f"'eta' must be >= 0, got {values['eta']}")
    for key in ("num_iter_per_show", "num_iter_per_test", "test_num", "num_iter_per_save",
                "num_iter_per_annealing", "max_iter"):
        if key in values and values[key] <= 0:
            fail(key, f"'{key}' must be > 0, got {values[key]}")
    if values.get("seed") is not None and values["seed"] < 0:
        fail("seed", f"'seed' must be >= 0, got {values['seed']}")
    if values.get("num_threads", 0) < 0:
        values["num_threads"] = 0
