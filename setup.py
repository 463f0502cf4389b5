"""Build znn's C/Cython extensions against MKL (metadata lives in pyproject.toml).

Every ``znn/_core/_<name>.pyx`` becomes the extension ``znn._core._<name>``, compiled
together with ``src/common.c`` and every ``src/<name>*.c``.

MKL is found in ``$MKLROOT`` when set (conda), otherwise in the installed ``mkl`` /
``mkl-include`` wheels.  The wheels ship only versioned libraries, so ``libmkl_rt.so.3``
is linked by file name, with an rpath relative to the extension so that no
``LD_LIBRARY_PATH`` is needed at run time.

Build flags (environment variables, ``1``/``0``) mirror the original ZNN:
ZNN_USE_FLOATS, ZNN_USE_MKL_NATIVE_FFT, ZNN_USE_MKL_FFT, ZNN_USE_MKL_DIRECT_CONV,
ZNN_DONT_CACHE_FFTS, ZNN_XEON_PHI.  ZNN_NATIVE=1 adds -march=native.
"""
import glob
import importlib.metadata
import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()
CORE = Path("znn") / "_core"

# name -> default; each becomes a C macro (0/1).
FLAGS = {
    "ZNN_USE_FLOATS": 1,
    "ZNN_USE_MKL_NATIVE_FFT": 1,
    "ZNN_USE_MKL_FFT": 0,
    "ZNN_USE_MKL_DIRECT_CONV": 1,
    "ZNN_DONT_CACHE_FFTS": 0,
    "ZNN_XEON_PHI": 0,
}


def flag_value(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return 1
    if value in ("0", "no", "false", "off"):
        return 0
    sys.exit(f"setup.py: environment variable {name}={raw!r} must be 0 or 1")


def wheel_file(dist, suffix):
    """Absolute path of the first file of an installed distribution ending with suffix."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate()).resolve()
    return None


def mkl_rt_name(lib):
    """File name of the MKL single dynamic library in lib (the wheels ship only .so.3)."""
    for name in ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"):
        if (Path(lib) / name).exists():
            return name
    sys.exit(f"setup.py: no libmkl_rt.so* in {lib}")


def find_mkl():
    """Return (include_dir, lib_dir) of MKL."""
    root = os.environ.get("MKLROOT")
    if root:
        inc, lib = Path(root) / "include", Path(root) / "lib"
        if (lib / "intel64").is_dir() and not list(lib.glob("libmkl_rt.so*")):
            lib = lib / "intel64"
        return inc, lib
    header = wheel_file("mkl-include", "include/mkl.h")
    library = wheel_file("mkl", "libmkl_rt.so.3")
    if header is None or library is None:
        for prefix in (Path(sys.prefix), Path(sys.base_prefix)):
            if header is None and (prefix / "include" / "mkl.h").exists():
                header = prefix / "include" / "mkl.h"
            if library is None and (prefix / "lib" / "libmkl_rt.so.3").exists():
                library = prefix / "lib" / "libmkl_rt.so.3"
    if header is None or library is None:
        sys.exit("setup.py: MKL not found: pip install mkl mkl-devel mkl-include, or set MKLROOT")
    return header.parent, library.parent


def extensions():
    inc, lib = find_mkl()
    flags = {name: flag_value(name, default) for name, default in FLAGS.items()}
    macros = [(name, str(value)) for name, value in flags.items()]
    macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))
    cflags = ["-O3", "-fopenmp", "-std=c11", "-Wall", "-Wno-unused-function",
              "-Wno-unknown-pragmas"]
    if os.environ.get("ZNN_NATIVE", "0") == "1":
        cflags.append("-march=native")
    # libmkl_rt.so.3 sits in <prefix>/lib; the extension in
    # <prefix>/lib/pythonX.Y/site-packages/znn/_core, four levels below it.
    rpaths = ["$ORIGIN/../../../..", str(lib), str(Path(sys.prefix) / "lib")]
    ldflags = ["-fopenmp", f"-L{lib}", f"-l:{mkl_rt_name(lib)}", "-lm"]
    ldflags += [f"-Wl,-rpath,{p}" for p in dict.fromkeys(rpaths)]
    only = {s.strip() for s in os.environ.get("ZNN_ONLY", "").split(",") if s.strip()}
    exts = []
    for pyx in sorted(glob.glob(str(CORE / "_*.pyx"))):
        name = Path(pyx).stem  # _fft
        if only and name.lstrip("_") not in only and name not in only:
            continue
        csrc = sorted(glob.glob(str(CORE / "src" / f"{name.lstrip('_')}*.c")))
        exts.append(Extension(
            f"znn._core.{name}",
            sources=[pyx, str(CORE / "src" / "common.c"), *csrc],
            include_dirs=[str(CORE / "src"), str(inc), numpy.get_include()],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=ldflags,
            # headers and templates: a change to any of them rebuilds the extension
            depends=sorted(str(p) for p in (CORE / "src").iterdir()
                           if p.suffix in (".h", ".inc")),
        ))
    return cythonize(
        exts,
        compiler_directives={"language_level": 3, "boundscheck": False,
                             "wraparound": False, "cdivision": True},
        quiet=True,
    )


setup(ext_modules=extensions())
