"""Saved conv plans: per-layer FFT/direct timings in a JSON sidecar `<network>.znn.plan`.

File format (UTF-8 JSON, written atomically)::

    {"format": "znn-conv-plan", "version": 1, "plans": [ENTRY, ...]}

    ENTRY = {"network": sha256 hex of the .znn file's bytes, "network_file": "N4.znn",
             "mode": "train" | "forward", "output_size": [z, y, x], "dtype": "float32",
             "threads": effective thread count (0 resolved to the core count),
             "machine": {"cpu": /proc/cpuinfo "model name", "cores": os.cpu_count(),
                         "cpu_id": "family F model M", "vector_isa": ["avx", "avx2", ...]},
             "build_flags": {"ZNN_USE_FLOATS": 1, ...}, "znn_version": "0.2.0",
             "repeats": timed passes per mode, "created": "2025-01-31T12:00:00Z",
             "layers": {conv layer: {"fft": seconds | null, "direct": seconds,
                                     "fft_bytes": kernel spectra bytes,
                                     "fft_shape": [z, y, x] of its transforms,
                                     "fft_engine": "whole" | "blocked" (forward plans),
                                     "winograd": 6 | 8 (when Winograd tiles of that
                                                 size beat the GEMM lowering),
                                     "winograd_data", "winograd_weight": 0 | 6 | 8
                                                 (training plans: the backward passes'
                                                 own choice, when it differs),
                                     "first_call": ["fft" | "direct"] (modes whose time
                                                 is of one first call: far behind),
                                     "estimated": ["direct"] (modes whose time is
                                                 estimated from a slab of the output:
                                                 far behind, never run whole)}}}

`layers` holds raw times only ("fft" is null when the layer's spectra alone exceeded the
memory budget and FFT was not timed); the fft/direct choice is made when the plan is used,
from the times and that run's memory budget.  1x1x1 layers are always direct and not listed.
One entry per (mode, output size, dtype, threads), at most MAX_PLANS, newest first.  When the
network's folder is not writable the file goes to $XDG_CACHE_HOME/znn/plans/<sha256>.plan
(default ~/.cache/znn/plans/); lookups check both places.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT, VERSION, MAX_PLANS = "znn-conv-plan", 1, 16
# a layer's direct methods: Winograd points (0: the GEMM lowering) of the forward pass, and
# of the backward passes where they differ
WINOGRAD_KEYS = ("winograd", "winograd_data", "winograd_weight")
_REQUIRED = ("network", "mode", "output_size", "dtype", "threads", "machine", "build_flags",
             "znn_version", "layers")


@dataclass
class PlanEntry:
    """One saved timing of every conv layer of a network for one configuration."""

    network: str
    mode: str
    output_size: tuple
    dtype: str
    threads: int
    machine: dict
    build_flags: dict
    znn_version: str
    layers: dict
    network_file: str = ""
    repeats: int = 0
    created: str = ""
    path: Path | None = field(default=None, compare=False)  # where it was read from

    def key(self):
        return (self.mode, tuple(self.output_size), self.dtype, int(self.threads))

    def to_json(self):
        d = asdict(self)
        d.pop("path")
        d["output_size"] = list(self.output_size)
        return d

    @classmethod
    def from_json(cls, d):
        if not isinstance(d, dict) or not isinstance(d.get("layers"), dict):
            raise ValueError("a plan entry is not an object with 'layers'")
        names = [f for f in cls.__dataclass_fields__ if f != "path"]
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"a plan entry lacks {missing}")
        entry = cls(**{k: d[k] for k in names if k in d})
        entry.output_size = tuple(int(v) for v in entry.output_size)
        entry.threads = int(entry.threads)
        for name, t in entry.layers.items():
            if not (isinstance(t, dict) and isinstance(t.get("direct"), (int, float))
                    and (t.get("fft") is None or isinstance(t["fft"], (int, float)))):
                raise ValueError(f"bad times for layer '{name}'")
            if t.get("fft_engine") not in (None, "blocked", "whole"):
                raise ValueError(f"bad fft_engine for layer '{name}'")
            for key in WINOGRAD_KEYS:
                if t.get(key, 0) not in (0, 6, 8) or isinstance(t.get(key), bool):
                    raise ValueError(f"bad {key} for layer '{name}'")
            for key in ("first_call", "estimated"):
                modes = t.get(key, [])
                if not isinstance(modes, list) or not set(modes) <= {"fft", "direct"}:
                    raise ValueError(f"bad {key} for layer '{name}'")
        if entry.mode not in ("train", "forward") or len(entry.output_size) != 3:
            raise ValueError("bad mode or output_size")
        return entry


# -- what a plan was made for -----------------------------------------------------------------
def network_hash(znn_path):
    """sha256 hex digest of the network file's bytes."""
    return hashlib.sha256(Path(znn_path).read_bytes()).hexdigest()


def _cpuinfo():
    """{field: value} of the first processor in /proc/cpuinfo ({} where there is none)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return info


def _cpu_model(info):
    if info.get("model name"):
        return info["model name"]
    import platform

    return platform.processor() or platform.machine() or "unknown"


def _vector_isa(flags):
    """The SIMD extensions among the CPU flags that change which kernels are fastest."""
    return sorted(f for f in flags if f in ("avx", "avx2", "fma") or f.startswith(("avx512",
                                                                                    "amx")))


def machine():
    """What a plan's timings depend on: the CPU (model name, family and model, vector ISA,
    e.g. the same 'AMD EPYC' name covers hosts with and without AVX-512) and the cores."""
    info = _cpuinfo()
    out = {"cpu": _cpu_model(info), "cores": os.cpu_count() or 1}
    if "cpu family" in info or "model" in info:
        out["cpu_id"] = f"family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    if "flags" in info:
        out["vector_isa"] = _vector_isa(info["flags"].split())
    return out


def _isa_level(isa):
    for name, level in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if name in isa:
            return level
    return "no AVX"


def environment():
    """The parts of a plan that describe this machine and this build of znn."""
    from znn import kernels
    from znn._version import __version__

    return {"machine": machine(),
            "build_flags": {k: int(v) for k, v in kernels.build_flags().items()},
            "znn_version": __version__}


def new_entry(znn_path, *, mode, output_size, dtype, threads, layers, repeats):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PlanEntry(network=network_hash(znn_path), mode=mode,
                     output_size=tuple(int(v) for v in output_size), dtype=str(dtype),
                     threads=int(threads), layers=layers, network_file=Path(znn_path).name,
                     repeats=int(repeats), created=now, **environment())


# -- where plans live ---------------------------------------------------------------------------
def sidecar_path(znn_path):
    """`<network>.znn` -> `<network>.znn.plan` next to it."""
    p = Path(znn_path)
    return p.with_name(p.name + ".plan")


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "znn" / "plans"


def cache_path(net_hash):
    return cache_dir() / f"{net_hash}.plan"


def read_plans(path, log=None):
    """Entries of a plan file ([] when absent; a notice and [] when unreadable)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        if doc.get("version") != VERSION:
            raise ValueError(f"format version {doc.get('version')!r}, this znn reads {VERSION}")
        if not isinstance(doc.get("plans"), list):
            raise ValueError("no 'plans' list")
        entries = [PlanEntry.from_json(d) for d in doc["plans"]]
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        if log:
            log(f"conv plan file {path} is unreadable ({_short(exc)}): it will be re-made")
        return []
    for e in entries:
        e.path = path
    return entries


def _short(exc):
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _write_atomic(path, doc):
    """Write JSON to `path` through a temp file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # open(): the umask applies
    try:
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _merged(path, entry):
    """The entries of `path` with `entry` added: same key replaced, other networks' dropped."""
    keep = [e for e in read_plans(path) if e.key() != entry.key() and e.network == entry.network]
    return [entry] + keep[:MAX_PLANS - 1]


def save_plan(znn_path, entry, log=None):
    """Add `entry` to the network's sidecar, or to the cache folder when that cannot be
    written; returns the file written (None, after a notice, when neither can be)."""
    log = log or (lambda line: None)

    def write(path):
        _write_atomic(path, {"format": FORMAT, "version": VERSION,
                             "plans": [e.to_json() for e in _merged(path, entry)]})
        entry.path = path
        return path

    side = sidecar_path(znn_path)
    try:
        return write(side)
    except OSError as exc:
        fallback = cache_path(entry.network)
        try:
            write(fallback)
        except OSError as exc2:
            log(f"cannot save the conv plan to {side} ({_short(exc)}) or {fallback} "
                f"({_short(exc2)}): it is used for this run only")
            entry.path = None
            return None
        log(f"cannot write {side} ({_short(exc)}): saved the conv plan to {fallback}")
        return fallback


# -- finding a plan --------------------------------------------------------------------------
def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe(field_name, value):
    if field_name == "threads":
        return _plural(value, "thread")
    if field_name == "output_size":
        return "output " + "x".join(map(str, value))
    if field_name == "network":
        return f"network sha256 {value[:12]}"
    if field_name == "machine":
        ident = "".join(f", {v}" for v in (value.get("cpu_id"),) if v)
        if "vector_isa" in value:
            ident += f", {_isa_level(value['vector_isa'])}"
        return f"CPU '{value.get('cpu')}' ({_plural(value.get('cores', 0), 'core')}{ident})"
    if field_name == "build_flags":
        return "build flags " + " ".join(f"{k}={v}" for k, v in value.items()) if value \
            else "no build flags"
    if field_name == "znn_version":
        return f"znn {value}"
    return str(value)


_COMPARED = ("network", "machine", "build_flags", "znn_version", "output_size", "dtype",
             "threads")


def differences(entry, wanted):
    """[(field, then, now)] of the fields in which a saved entry differs from `wanted`."""
    out = []
    for f in _COMPARED:
        a, b = getattr(entry, f), getattr(wanted, f)
        if f == "output_size":
            a, b = tuple(a), tuple(b)
        if f == "build_flags":  # name only the flags that changed
            keys = sorted(set(a) | set(b))
            a2 = {k: a.get(k) for k in keys if a.get(k) != b.get(k)}
            b2 = {k: b.get(k) for k in keys if a.get(k) != b.get(k)}
            a, b = a2, b2
        if a != b:
            out.append((f, _describe(f, a), _describe(f, b)))
    return out


@dataclass
class Lookup:
    """Result of find_plan: the matching entry, or why there is none."""

    entry: PlanEntry | None
    stale: str | None = None  # a notice naming what differed, when a plan of this mode exists


def _layer_difference(entry, fft_shapes):
    saved = {k: tuple(v["fft_shape"]) for k, v in entry.layers.items() if "fft_shape" in v}
    if sorted(entry.layers) != sorted(fft_shapes):
        return [("layers", "layers " + ",".join(entry.layers),
                 "layers " + ",".join(fft_shapes))]
    changed = [k for k, v in saved.items() if v != tuple(fft_shapes[k])]
    if changed:
        return [("fft_shape", "other FFT sizes of " + ",".join(changed),
                 "FFT sizes " + ", ".join("x".join(map(str, fft_shapes[k])) for k in changed))]
    return []


def find_plan(znn_path, *, mode, output_size, dtype, threads, fft_shapes, log=None):
    """The saved entry for exactly this network, machine, build and configuration.

    fft_shapes: {timed conv layer: its FFT size (z, y, x)} of the network being planned.
    Checks the sidecar, then the cache folder.  When only entries made for something else
    exist, `stale` says what differed (closest entry of the same mode).
    """
    layer_names = list(fft_shapes)
    wanted = PlanEntry(network=network_hash(znn_path), mode=mode,
                       output_size=tuple(output_size), dtype=str(dtype), threads=int(threads),
                       layers={}, **environment())
    files = [sidecar_path(znn_path), cache_path(wanted.network)]
    entries = [e for p in files for e in read_plans(p, log) if e.mode == mode]
    best, best_diff = None, None
    for e in entries:
        diff = differences(e, wanted)
        diff = diff or _layer_difference(e, fft_shapes)
        if not diff:
            return Lookup(e)
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = e, diff
    if best is None:
        return Lookup(None)
    then = ", ".join(d[1] for d in best_diff)
    now = ", ".join(d[2] for d in best_diff)
    n = len(layer_names)
    return Lookup(None, f"conv plan in {best.path.name} was made for {then}, this run uses "
                        f"{now}: re-timing {_plural(n, 'layer')}")
