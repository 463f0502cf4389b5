"""Whole networks, znn against PyTorch CPU, every case in a fresh subprocess; tables written."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
NETWORKS = HERE.parent / "networks"
DTYPE = "float32"
GIB = 2**30

# name: network, kind, default size (training: output patch; inference: volume), quick size,
# target (torch time / znn time), target for 2 threads / 1 thread (training only)
CASES = {
    "N4-train": ("N4.znn", "train", (1, 200, 200), (1, 16, 16), 2.0, 1.85),
    "VD2D3D-train": ("VD2D3D.znn", "train", (4, 100, 100), (1, 8, 8), 2.0, 1.85),
    "net3d_7-train": ("net3d_7.znn", "train", (8, 8, 8), (1, 1, 1), 3.0, None),
    "N4-infer": ("N4.znn", "infer", (30, 512, 512), (2, 96, 96), 3.0, None),
    "net3d_7-infer": ("net3d_7.znn", "infer", (32, 128, 128), (2, 16, 16), 5.0, None),
}
FRAMEWORKS = ("znn", "znn-fft", "znn-direct", "torch")
SCALING_CHILDREN = ("znn-scaling", "torch-scaling")  # 1 and 2 threads alternated
RESULT = "RESULT "  # prefix of the child's JSON line on stdout

NOTES = """Notes:
- Every (case, threads, framework) ran in its own fresh Python process (OMP_NUM_THREADS,
  MKL_NUM_THREADS, znn num_threads and torch.set_num_threads all set to the thread count).
- Training: output voxels per second of one forward + backward + SGD (momentum 0.9) step on a
  random patch; best of {repeats} steps after {warmup} warm-up steps (the first steps of a
  fresh process pay for page faults and plans), same patch for both.
  Both compute the same dense network (PyTorch: conv3d with dilation, max_pool3d stride 1).
- znn = per-layer modes from the conv plan, made as a user does: first a separate process
  runs optimize_network(net, training=..., budget={budget:.1f} GiB = half of the available
  memory, znn_path=a private copy of the .znn) like `znn optimize-conv`, timing every layer
  and saving the plan (plan column, not counted); then the timed process loads that saved
  plan (optimize_network / VolumeForward(conv_mode="optimize") find it) and runs.
  fft-only / direct-only = every conv layer in one mode; 'skipped' when the memory estimate
  of that mode exceeds {cap:.0f} GiB / 1.3 (the estimate runs ~20-30% low).
- Inference: voxels per second over a mirrored uint8 stack, including reading the TIFF and
  writing the outputs. znn: one VolumeForward(conv_mode="optimize").run (tile size chosen by
  its memory budget; HDF5 + one TIFF per channel written), no warm-up; the plan lookup time
  (milliseconds) is subtracted. PyTorch: tifffile read, np.pad symmetric, dense forward
  (2D networks slice by slice, 3D networks on the whole padded volume at once), one float32
  TIFF per output channel; one small untimed warm-up forward first.
- Alternated scaling (training cases): one more process per framework builds the network for
  1 and for 2 threads (znn: each with the plan its own plan process saved; PyTorch: one model,
  torch.set_num_threads before each step), warms both up, then runs {scaling_rounds} rounds of
  one step at each thread count (order flipped every round), so both counts meet the same
  host.  2t/1t is the median over rounds of each round's ratio.  Before the first round and
  after every round a two-core probe runs: the throughput of two single-threaded in-cache
  GEMMs run at once over one alone (2.0x = two full cores; lower when the host's other
  tenants take a share of the cores).  It is a ~0.2 s sample, so it shows how much the
  host's capacity moved during the case, not the exact limit of any one step.
- ratio = torch time / znn time; 'met?' compares it with the issue's target. A case run
  with another network (--net CASE=FILE) is named with that file and has no target.
- rounds: {rounds} per (case, threads), the frameworks' processes in turn; each keeps its
  fastest round (all rounds' seconds are in the .json as round_seconds).
- modes: one letter per conv layer in network order (F fft, D direct as GEMM lowering,
  W direct as Winograd tiles; 1x1x1 layers omitted).
- other CPU: cores kept busy by other processes while the znn / torch subprocess ran
  (/proc/stat busy time minus the subprocess's own CPU time, over its wall time; the
  machine has {cores} cores). Before each subprocess the script waits up to {wait:.0f} s for
  the machine to be idle (< 0.25 cores busy), and re-runs a case (up to {retries} times) when
  other processes used > 0.3 cores, keeping the least disturbed run. Rows whose other CPU
  is still well above 0 are unreliable (other jobs shared the 2 cores).
"""


# -- child side ----------------------------------------------------------------------------------
def build(case_net, out, threads, mode="direct"):
    from znn.formats.network_file import read_network
    from znn.net.graph import Network

    return Network(read_network(case_net), out, dtype=DTYPE, conv_mode=mode,
                   num_threads=threads, seed=0, phase="train")


def mode_letters(net):
    return "".join("W" if e.mode == "direct" and e.winograd else e.mode[0].upper()
                   for e in net.conv_edges() if e.ksize != (1, 1, 1))


def local_copy(net_path, workdir):
    """The case's private copy of the .znn (its saved conv plan lives next to it)."""
    import shutil

    local = Path(workdir) / Path(net_path).name
    if not local.exists():
        shutil.copy(net_path, local)
    return local


def znn_plan(net_path, kind, size, threads, args):
    """What `znn optimize-conv` does, in a process of its own: time the layers, save the plan."""
    from znn.formats.network_file import read_network
    from znn.inference import plan_output_size
    from znn.kernels import CACHE_FFTS
    from znn.net.conv_plan import optimize_network
    from znn.net.memory import estimate_bytes

    local, budget = local_copy(net_path, args.workdir), int(args.budget * GIB)
    if kind == "train":
        net, layer_budget = build(local, size, threads), budget
    else:  # the tile VolumeForward will use, and its budget less the tile's arrays, as it does
        tile = plan_output_size(read_network(local), tuple(size), None, budget, DTYPE, "direct",
                                threads, CACHE_FFTS)
        net = build(local, tile.output_size, threads)
        layer_budget = budget - (tile.bytes - estimate_bytes(net, training=False,
                                                             cache_ffts=CACHE_FFTS))
    t0 = time.perf_counter()
    report = optimize_network(net, training=kind == "train", budget=layer_budget,
                              znn_path=local)
    return {"plan_s": time.perf_counter() - t0, "modes": mode_letters(net), "plan": report,
            "plan_output_size": list(net.output_size)}


def znn_train(net_path, out, threads, fw, args):
    import numpy as np

    from common import best_time
    from znn.kernels import CACHE_FFTS
    from znn.net.conv_plan import optimize_network
    from znn.net.memory import estimate_bytes
    from znn.optim import SGD

    res = {}
    if fw == "znn":  # the plan saved by the znn-plan process, looked up as `znn train` does
        local, lines = local_copy(net_path, args.workdir), []
        net = build(local, out, threads)
        t0 = time.perf_counter()
        optimize_network(net, training=True, budget=int(args.budget * GIB), znn_path=local,
                         log=lines.append)
        res.update(lookup_s=time.perf_counter() - t0, plan_log=lines,
                   replanned=any(not ln.startswith("conv plan") for ln in lines))
    else:
        net = build(net_path, out, threads, fw.split("-")[1])
    est = estimate_bytes(net, training=True, cache_ffts=CACHE_FFTS)
    res.update(modes=mode_letters(net), estimate_gib=est / GIB)
    if fw == "znn-fft" and est > args.cap * GIB / 1.3:
        return {**res, "skipped": f"est. {est / GIB:.1f} GiB"}
    rng = np.random.default_rng(0)
    x = {n: rng.standard_normal(net.nodes[n].shape).astype(DTYPE) for n in net.inputs}
    opt = SGD(net, net.output_size, eta=1e-6, momentum=0.9)

    def step():
        y = net.forward(x)
        net.backward({k: np.ones_like(v) for k, v in y.items()})
        opt.step()
    return {**res, "seconds": best_time(step, repeats=args.repeats, warmup=args.warmup)}


def alternate_threads(steps, rounds, warmup):
    """Training steps at 1 and 2 threads in turn in one process, the two-core probe run
    between them: one (1-thread s, 2-thread s, probe) per round, the probe being the mean of
    the readings before and after the round's two steps."""
    from common import two_core_probe

    for _ in range(warmup):
        steps[1]()
        steps[2]()
    probes, rows = [two_core_probe()], []
    for r in range(rounds):
        took = {}
        for n in (1, 2) if r % 2 == 0 else (2, 1):
            t0 = time.perf_counter()
            steps[n]()
            took[n] = time.perf_counter() - t0
        probes.append(two_core_probe())
        rows.append((took[1], took[2], (probes[-2] + probes[-1]) / 2))
    return rows


def znn_scaling(net_path, out, args):
    """1 and 2 threads alternated: two networks, each with the saved plan for its threads."""
    import numpy as np

    from znn.net.conv_plan import optimize_network
    from znn.optim import SGD

    local, steps, lines = local_copy(net_path, args.workdir), {}, []
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        net = build(local, out, threads)
        optimize_network(net, training=True, budget=int(args.budget * GIB), znn_path=local,
                         log=lines.append)
        x = {n: rng.standard_normal(net.nodes[n].shape).astype(DTYPE) for n in net.inputs}
        opt = SGD(net, net.output_size, eta=1e-6, momentum=0.9)

        def step(net=net, x=x, opt=opt):
            y = net.forward(x)
            net.backward({k: np.ones_like(v) for k, v in y.items()})
            opt.step()
        steps[threads] = step
    return {"rounds": alternate_threads(steps, args.scaling_rounds, args.warmup),
            "replanned": any(not ln.startswith("conv plan") for ln in lines)}


def torch_scaling(net_path, out, args):
    import torch

    from torch_nets import train_step

    step = train_step(build(net_path, out, 2))

    def at(threads):
        def run():
            torch.set_num_threads(threads)
            step()
        return run
    return {"rounds": alternate_threads({1: at(1), 2: at(2)}, args.scaling_rounds,
                                        args.warmup)}


def torch_train(net_path, out, threads, args):
    from common import best_time
    from torch_nets import train_step

    net = build(net_path, out, threads)
    return {"seconds": best_time(train_step(net), repeats=args.repeats,
                                  warmup=args.warmup)}


def write_stack(folder, shape):
    import numpy as np
    import tifffile

    vol = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = Path(folder) / "stack.tif"
    tifffile.imwrite(path, vol, photometric="minisblack")
    return path


def time_planning(planned):
    """Wrap conv_plan's planning entry points so the time spent in them is recorded."""
    import znn.net.conv_plan as conv_plan

    depth = [0]

    def wrap(fn):
        def timed(net, *a, **kw):  # VolumeForward imports these from conv_plan at run time
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                result = fn(net, *a, **kw)
            finally:
                depth[0] -= 1
            if depth[0] == 0:  # (seconds, modes, whether it timed the layers)
                planned.append((time.perf_counter() - t0, mode_letters(net),
                                getattr(result, "timed", None)))
            return result
        return timed

    for name in ("plan_network", "optimize_network"):
        if hasattr(conv_plan, name):
            setattr(conv_plan, name, wrap(getattr(conv_plan, name)))


def znn_infer(net_path, vol_shape, threads, args):
    from znn.inference import VolumeForward

    planned, lines = [], []
    time_planning(planned)
    local = local_copy(net_path, args.workdir)  # with the plan saved by the znn-plan process
    with tempfile.TemporaryDirectory(prefix="znn-bench-") as tmp:
        stack = write_stack(tmp, vol_shape)
        weights = Path(tmp) / "net.h5"
        net = build(local, (1, 1, 1), threads)
        net.save(weights)
        vf = VolumeForward(local, weights, dtype=DTYPE, conv_mode="optimize",
                           num_threads=threads, mirror=True, max_memory=int(args.budget * GIB),
                           log=lines.append)
        t0 = time.perf_counter()
        vf.run({n: [(stack, "none")] for n in net.inputs}, Path(tmp) / "out")
        total = time.perf_counter() - t0
    lookup = sum(p[0] for p in planned)
    return {"seconds": total - lookup, "lookup_s": lookup, "total_s": total,
            "modes": ",".join(p[1] for p in planned),
            "replanned": any(p[2] is not False for p in planned) or not planned,
            "log": [s for s in lines if not s.startswith("done")]}


def torch_infer(net_path, vol_shape, threads, args):
    import numpy as np
    import tifffile

    from torch_nets import dense_volume

    with tempfile.TemporaryDirectory(prefix="torch-bench-") as tmp:
        stack = write_stack(tmp, vol_shape)
        net = build(net_path, (1, 1, 1), threads)
        fov = net.fov
        warm = np.zeros(tuple(f + 1 for f in fov), np.float32)
        dense_volume(net, warm)  # untimed: oneDNN primitive creation, allocator
        t0 = time.perf_counter()
        vol = tifffile.imread(stack).astype(np.float32)
        pads = [((f - 1) // 2, f // 2) for f in fov]
        outs = dense_volume(net, np.pad(vol, pads, mode="symmetric"))
        for name, arr in outs.items():
            assert arr.shape[1:] == tuple(vol_shape), (arr.shape, vol_shape)
            for c in range(arr.shape[0]):
                tifffile.imwrite(Path(tmp) / f"out_{name}_{c}.tif", arr[c],
                                 photometric="minisblack")
        return {"seconds": time.perf_counter() - t0}


def run_child(args):
    """One case in this process: print RESULT {json} on stdout."""
    threads = args.threads_one
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if args.framework.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    else:  # as the `znn train` / `znn forward` commands do
        from znn.process import tune_memory
        tune_memory(huge_pages=CASES[args.case][1] == "train")
    from common import peak_rss_mb

    net_file, kind, size = case_setup(args, args.case)
    net_path = net_file if os.path.isabs(net_file) else NETWORKS / net_file
    if args.framework == "znn-plan":
        res = znn_plan(net_path, kind, size, threads, args)
    elif args.framework == "znn-scaling":
        res = znn_scaling(net_path, size, args)
    elif args.framework == "torch-scaling":
        res = torch_scaling(net_path, size, args)
    elif kind == "train":
        if args.framework == "torch":
            res = torch_train(net_path, size, threads, args)
        else:
            res = znn_train(net_path, size, threads, args.framework, args)
    elif args.framework == "torch":
        res = torch_infer(net_path, size, threads, args)
    elif args.framework == "znn":
        res = znn_infer(net_path, size, threads, args)
    else:
        res = {"skipped": "n/a"}
    vox = 1
    for s in size:
        vox *= s
    if "seconds" in res:
        res["vox_per_s"] = vox / res["seconds"]
    res.update(peak_rss_mb=peak_rss_mb(), voxels=vox, size=list(size))
    if args.framework.startswith("torch"):
        import torch

        res["torch_threads"] = torch.get_num_threads()
    print(RESULT + json.dumps(res, default=str), flush=True)


# -- parent side ---------------------------------------------------------------------------------
def case_setup(args, name):
    """(network file, kind, size) of a case after --quick / --size / --net."""
    net_file, kind, size, quick, _, _ = CASES[name]
    size = quick if args.quick else size
    for item in args.size or []:
        key, _, val = item.partition("=")
        if key == name:
            size = tuple(int(v) for v in val.replace("x", ",").split(","))
    for item in args.net or []:
        key, _, val = item.partition("=")
        if key == name:
            net_file = str(network_path(val))
    return net_file, kind, tuple(size)


def network_path(val):
    """A --net file: as given, else by that name in networks/ (absolute either way)."""
    path = Path(val)
    if not path.exists() and not path.is_absolute() and (NETWORKS / path).exists():
        path = NETWORKS / path
    return path.resolve()


def case_label(args, case):
    """(row label, training/inference target, 2t/1t target) of a case. A case whose network
    --net replaced is named with that file and has no targets: the issue's targets are for
    the issue's networks."""
    net_file, kind, size = case_setup(args, case)
    label = f"{case} {'out' if kind == 'train' else 'vol'} {'x'.join(map(str, size))}"
    if (NETWORKS / net_file).resolve() != (NETWORKS / CASES[case][0]).resolve():
        return label.replace(" ", f" [{Path(net_file).name}] ", 1), None, None
    return label, CASES[case][4], CASES[case][5]


def case_json(args, case):
    net_file, kind, size = case_setup(args, case)
    label, target, scale_target = case_label(args, case)
    return {"label": label, "network": Path(net_file).name, "kind": kind, "size": list(size),
            "target": target, "scaling_target": scale_target}


def child_cmd(args, case, threads, fw, workdir=None):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--framework", fw,
           "--threads-one", str(threads), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--cap", str(args.cap),
           "--budget", f"{args.budget:.3f}", "--scaling-rounds", str(args.scaling_rounds)]
    if args.quick:
        cmd.append("--quick")
    if workdir:
        cmd += ["--workdir", str(workdir)]
    for opt in ("size", "net"):
        for item in getattr(args, opt) or []:
            cmd += [f"--{opt}", item]
    return cmd


def run_case(args, case, threads, fw):
    """Run one case's subprocess (for znn: the plan process, then the timed one)."""
    if fw != "znn":
        return run_child_process(args, case, threads, fw)
    with tempfile.TemporaryDirectory(prefix="znn-bench-plan-") as workdir:
        plan = run_child_process(args, case, threads, "znn-plan", workdir)
        took = f"{plan['plan_s']:.1f} s" if "plan_s" in plan else plan.get("failed", "?")
        print(f"   plan: {took}, modes {plan.get('modes', '?')}", flush=True)
        res = run_child_process(args, case, threads, "znn", workdir)
    for k in ("plan_s", "plan", "plan_output_size"):
        if k in plan:
            res[k] = plan[k]
    res["plan_peak_rss_mb"] = plan.get("peak_rss_mb")
    res["plan_other_cores"] = plan.get("other_cores")
    return res


def run_scaling(args, case, fw):
    """One process stepping the case at 1 and 2 threads in turn (znn: with the plans of
    both thread counts, each made by its own plan process first)."""
    if fw != "znn":
        return run_child_process(args, case, 2, "torch-scaling")
    with tempfile.TemporaryDirectory(prefix="znn-bench-plan-") as workdir:
        for threads in (1, 2):
            plan = run_child_process(args, case, threads, "znn-plan", workdir)
            if "failed" in plan:
                return plan
        return run_child_process(args, case, 2, "znn-scaling", workdir)


def run_child_process(args, case, threads, fw, workdir=None):
    """Run a child; while others kept > 0.3 cores busy, retry (up to --retries), keep the
    least disturbed run."""
    best = None
    for attempt in range(1 + (args.retries if fw != "znn-plan" else 0)):
        res = run_once(args, case, threads, fw, workdir)
        res["attempts"] = attempt + 1
        if best is None or res.get("other_cores", 9) < best.get("other_cores", 9):
            best = res
        if "failed" in res or res.get("other_cores", 0) <= 0.3:
            break
        print(f"   (other processes used {res['other_cores']:.2f} cores: retrying)",
              flush=True)
    return best


def run_once(args, case, threads, fw, workdir):
    from common import cpu_busy_seconds, wait_for_idle

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = child_cmd(args, case, threads, fw, workdir)
    waited = wait_for_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
    busy0, ru0 = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timeout {args.timeout:.0f} s"}
    wall = time.perf_counter() - t0
    found = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT)]
    if p.returncode != 0 or not found:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        print(f"  {case} {threads}t {fw}: FAILED rc={p.returncode}\n{tail}", file=sys.stderr)
        return {"failed": f"rc={p.returncode}" + (" (killed: out of memory?)"
                                                   if p.returncode in (-9, 137) else "")}
    res = json.loads(found[-1][len(RESULT):])
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    if busy0 is not None:  # cores kept busy by other processes while the case ran
        res["other_cores"] = max(0.0, (cpu_busy_seconds() - busy0 - own) / wall)
    res.update(wall_s=wall, waited_s=waited)
    return res


def keep_faster(old, new):
    """The run with the shorter time (a failed run only when both failed); the times of all
    rounds are listed in 'round_seconds'."""
    rounds = (old or {}).get("round_seconds", []) + ([new["seconds"]] if "seconds" in new
                                                      else [])
    if old is not None and new.get("seconds", float("inf")) >= old.get("seconds",
                                                                         float("inf")):
        new = old
    return {**new, "round_seconds": rounds} if rounds else new


def fmt_rate(r):
    if r is None:
        return "-"
    if "vox_per_s" in r:
        v = r["vox_per_s"]
        return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
    return r.get("skipped") or r.get("failed") or "-"


def tables(args, selected, threads_list, results):
    main_rows, detail_rows, scale_rows = [], [], []
    for case in selected:
        kind = case_setup(args, case)[1]
        label, target, scale_target = case_label(args, case)
        for t in threads_list:
            r = {fw: results.get((case, t, fw)) for fw in FRAMEWORKS}
            z, tr = r["znn"] or {}, r["torch"] or {}
            ratio = (tr["seconds"] / z["seconds"] if "seconds" in z and "seconds" in tr
                     else None)
            main_rows.append([label, t, fmt_rate(r["znn"]),
                              fmt_rate(r["znn-fft"]) if kind == "train" else "",
                              fmt_rate(r["znn-direct"]) if kind == "train" else "",
                              fmt_rate(r["torch"]), f"{ratio:.2f}x" if ratio else "-",
                              f">= {target:g}x" if target else "",
                              ("yes" if ratio >= target else "NO") if ratio and target
                              else "-" if target else ""])
            rss = "/".join(f"{r[fw]['peak_rss_mb'] / 1024:.1f}" if r[fw] and "peak_rss_mb"
                           in r[fw] else "-" for fw in FRAMEWORKS)
            load = "/".join(f"{r[fw]['other_cores']:.2f}" if r[fw] and "other_cores" in r[fw]
                            else "-" for fw in ("znn", "torch"))
            modes = z.get("modes", "-") + (" (re-planned!)" if z.get("replanned") else "")
            detail_rows.append([label, t, f"{z['plan_s']:.1f}" if "plan_s" in z else "-",
                                modes, rss,
                                f"{z['seconds']:.3f}" if "seconds" in z else "-",
                                f"{tr['seconds']:.3f}" if "seconds" in tr else "-", load])
        if 1 in threads_list and 2 in threads_list:
            def scale(fw):
                a, b = results.get((case, 1, fw)) or {}, results.get((case, 2, fw)) or {}
                if "seconds" in a and "seconds" in b:
                    return a["seconds"] / b["seconds"]
                return None
            zs, ts = scale("znn"), scale("torch")
            scale_rows.append([label, f"{zs:.2f}x" if zs else "-", f"{ts:.2f}x" if ts else "-",
                               f">= {scale_target:g}x" if scale_target else "",
                               ("yes" if zs >= scale_target else "NO")
                               if scale_target and zs else ""])
    return main_rows, detail_rows, scale_rows


def alternated_rows(args, selected, scaling):
    """The table of 1- and 2-thread steps alternated in one process: per framework the median
    (and range) over rounds of each round's 2t/1t ratio, and of the two-core probe."""
    from statistics import median

    def spread(values):
        return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"

    rows = []
    for case in selected:
        per = {fw: (scaling.get((case, fw)) or {}).get("rounds") or []
               for fw in ("znn", "torch")}
        if not any(per.values()):
            continue
        label, _, target = case_label(args, case)
        ratios = {fw: [a / b for a, b, _ in rounds] for fw, rounds in per.items()}
        probes = [c for rounds in per.values() for _, _, c in rounds]
        z = ratios["znn"]
        rows.append([label,
                     "/".join(str(len(r)) for r in per.values()),
                     spread(z) if z else "-",
                     spread(ratios["torch"]) if ratios["torch"] else "-", spread(probes),
                     f">= {target:g}x" if target else "",
                     ("yes" if median(z) >= target else "NO") if target and z else ""])
    return rows


def header_text(args):
    from common import machine
    from znn import kernels as K

    try:
        from importlib.metadata import version
        torch_version = version("torch")
    except Exception:  # torch missing: its cases fail and say so
        torch_version = "not installed"
    flags = " ".join(f"{k}={int(v)}" for k, v in K.build_flags().items())
    m = machine()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": m["cpu"],
            "cpu_id": m.get("cpu_id", "?"), "vector_isa": " ".join(m.get("vector_isa", [])),
            "cores": m["cores"], "torch": torch_version, "znn_build_flags": flags,
            "fft_backend": str(K.fft_backend() if callable(K.fft_backend) else K.fft_backend),
            "dtype": DTYPE, "quick": args.quick}


def run_parent(args):
    from common import markdown_table, write_results

    selected = [c for c in CASES if not args.only
                or any(tok == c or tok in c for tok in args.only.split(","))]
    if not selected:
        sys.exit(f"--only {args.only!r} matches no case; cases: {', '.join(CASES)}")
    threads_list = [int(t) for t in args.threads.split(",")]
    fws = [f for f in args.frameworks.split(",") if f]
    bad = set(fws) - set(FRAMEWORKS)
    if bad:
        sys.exit(f"--frameworks: unknown {sorted(bad)}; choose from {', '.join(FRAMEWORKS)}")
    # the rounds of a (case, threads) pair run in turn (znn, torch, znn, torch, ...), so a
    # slow spell of a shared host falls on both frameworks; the fastest run of each is kept
    jobs = [(c, t, f) for c in selected for t in threads_list for _ in range(args.rounds)
            for f in fws if CASES[c][1] == "train" or f in ("znn", "torch")]
    if args.budget is None:  # one budget for every subprocess
        from znn.inference import available_memory as avail

        args.budget = avail() / 2 / GIB
    alternated = [(c, f) for c in selected for f in ("znn", "torch")
                  if args.scaling_rounds > 0 and {1, 2} <= set(threads_list)
                  and CASES[c][1] == "train" and f in fws]
    if args.dry_run:
        for c, t, f in jobs:
            if f == "znn":
                print(" ".join(child_cmd(args, c, t, "znn-plan", "WORKDIR")))
            print(" ".join(child_cmd(args, c, t, f, "WORKDIR" if f == "znn" else None)))
        for c, f in alternated:
            for t in (1, 2) if f == "znn" else ():
                print(" ".join(child_cmd(args, c, t, "znn-plan", "WORKDIR")))
            print(" ".join(child_cmd(args, c, 2, f"{f}-scaling",
                                     "WORKDIR" if f == "znn" else None)))
        return None
    results = {}
    for c, t, f in jobs:
        print(f"== {c} {t} thread(s) {f}", flush=True)
        res = run_case(args, c, t, f)
        print(f"   {fmt_rate(res)} vox/s  " + ", ".join(
            f"{k}={res[k]:.3g}" if isinstance(res[k], float) else f"{k}={res[k]}"
            for k in ("seconds", "plan_s", "modes", "replanned", "peak_rss_mb", "other_cores")
            if k in res), flush=True)
        results[(c, t, f)] = keep_faster(results.get((c, t, f)), res)
    scaling = {}
    for c, f in alternated:
        print(f"== {c} 1 and 2 threads alternated in one process, {f}", flush=True)
        scaling[(c, f)] = res = run_scaling(args, c, f)
        print("   " + ("  ".join(f"{a / b:.2f}x (probe {r:.2f}x)"
                                 for a, b, r in res.get("rounds", []))
                       or res.get("failed", "?")), flush=True)
    head = header_text(args)
    main_rows, detail_rows, scale_rows = tables(args, selected, threads_list, results)
    alt_rows = alternated_rows(args, selected, scaling)
    text = "\n\n".join([
        "# znn vs PyTorch: whole networks (issue 6)",
        "\n".join(f"- {k}: {v}" for k, v in head.items()),
        markdown_table(["case", "threads", "znn vox/s", "znn fft-only", "znn direct-only",
                        "torch vox/s", "ratio (torch time / znn time)", "target", "met?"],
                       main_rows),
        "## 2-thread scaling (throughput 2 threads / 1 thread)",
        markdown_table(["case", "znn 2t/1t", "torch 2t/1t", "target (znn)", "met?"],
                       scale_rows) if scale_rows else "(needs --threads 1,2)",
        "## 2-thread scaling, steps alternated in one process",
        markdown_table(["case", "rounds znn/torch", "znn 2t/1t median (range)",
                        "torch 2t/1t median (range)", "two-core probe median (range)",
                        "target (znn)", "met?"],
                       alt_rows) if alt_rows else "(needs --threads 1,2, training cases and "
                                                   "--scaling-rounds > 0)",
        "## Details",
        markdown_table(["case", "threads", "znn plan s", "znn modes",
                        "peak RSS GiB znn/fft/direct/torch", "znn s", "torch s",
                        "other CPU (cores) znn/torch"], detail_rows),
        NOTES.format(rounds=args.rounds, scaling_rounds=args.scaling_rounds,
                     repeats=args.repeats, warmup=args.warmup, cap=args.cap,
                     budget=args.budget, retries=args.retries, cores=os.cpu_count(),
                     wait=args.wait_idle)])
    print("\n" + text)
    data = {"header": head, "results": [{"case": c, "threads": t, "framework": f, **r}
                                        for (c, t, f), r in results.items()],
            "alternated": [{"case": c, "framework": f, **r} for (c, f), r in scaling.items()],
            "cases": {c: case_json(args, c) for c in selected}}
    path = write_results("networks", text, data, args.out_dir)
    print(f"\nwritten: {path} and {path.with_suffix('.json')}")
    return data


def parse(argv=None):
    ap = argparse.ArgumentParser(
        description="Whole networks: znn against PyTorch CPU (same dense network, patch, "
        "threads), every case in a fresh subprocess. Cases: " + "; ".join(
            f"{k} ({v[1]} {'x'.join(map(str, v[2]))})" for k, v in CASES.items()))
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--only", help="comma list of case names or parts of them (N4,train)")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--size", action="append", metavar="CASE=Z,Y,X",
                    help="override a case's output patch (training) or volume (inference)")
    ap.add_argument("--net", action="append", metavar="CASE=FILE.znn",
                    help="run a case with another network file")
    ap.add_argument("--repeats", type=int, default=3, help="timed training steps (best of)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every (case, threads) this many times, frameworks in turn, and "
                         "keep each one's fastest run (for shared, noisy hosts)")
    ap.add_argument("--scaling-rounds", type=int, default=8,
                    help="training cases: rounds of 1- and 2-thread steps alternated in one "
                         "process per framework, with the two-core probe (0: skip)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    ap.add_argument("--budget", type=float, default=None,
                    help="GiB for the conv plan / inference (default half of available)")
    ap.add_argument("--cap", type=float, default=12.0,
                    help="GiB: fft-only runs whose estimate exceeds cap/1.3 are skipped")
    ap.add_argument("--wait-idle", type=float, default=120.0,
                    help="seconds to wait at most for an idle machine before each case")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs of a case disturbed by other processes (> 0.3 cores)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    ap.add_argument("--out-dir", default=None, help="results folder (default bench-results/)")
    ap.add_argument("--dry-run", action="store_true", help="print the subprocess commands")
    ap.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--framework", choices=FRAMEWORKS + ("znn-plan",) + SCALING_CHILDREN,
                    help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    for item in args.net or []:
        key, eq, val = item.partition("=")
        if not eq or key not in CASES:
            sys.exit(f"--net {item}: expected CASE=FILE.znn with CASE one of {', '.join(CASES)}")
        if not network_path(val).is_file():
            sys.exit(f"--net {item}: no such network file (looked in . and {NETWORKS})")
    if args.case:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
