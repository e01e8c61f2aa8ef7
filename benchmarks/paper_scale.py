"""Benchmark: the vision tasks at the paper's sizes, and image decoding throughput per worker.

Mode `tasks` builds, from seeded random data on disk, what the vision tasks read at the paper's
shapes (configs/paper.yaml): one model with `--sites` 1,024-d `cls` sites; activation stores
(float16, as extraction writes them) of ImageNet-1k train (1.28M images, the SAE training
rows), val (50k), seven OOD-detection sets and four shifted sets at their published sizes;
`--saes` SAEs of 16,384 latents per site at the trainer's initialisation (the sweep's
architectures: topk, batchtopk, relu, matryoshka); a 1,000-class WordNet-shaped hierarchy.
Activations are class means plus noise, so probes and hierarchies have something to find. Then
it runs each vision task (semantics, ood_detection, ood_generalization, ontology: the library
calls of their scripts, settings of configs/paper.yaml) in a subprocess of its own, one at a
time, and records its wall time and peak resident memory (`os.wait4` rusage of that child).
`--scale` multiplies every row count (the 100,000 training images the tasks subsample included)
and keeps the widths; the table states the scale. The last line printed is a JSON list of the
task records.

Extrapolation to the full size: `full_size_peak_mb` = peak RSS + (1 / scale - 1) x the peak of
the memory numpy allocated (tracemalloc). The numpy arrays (rows x latents codes, projections,
per-image tables) grow with the rows; the rest does not: imports, SAE weights, the encoder's
torch temporaries of one 8,192-row chunk, width x width matrices. Valid for semantics and
ontology once the scaled val set has 8,192 rows (scale >= 0.17). OOD detection and
generalization peak while a probe is fitted on the training codes (the codes, L-BFGS's history
and row chunks of 2,048: the probes copy nothing that grows with the rows), at every scale
where the training set has 2,048 rows (scale >= 0.02); the kNN bank (`knn_bank`, 12,811) is
scaled with the rows. Two options cut their compute, not their arrays: `--probe-iter`
(fewer L-BFGS iterations; the history pairs a fit of that many iterations does not reach,
20 - (iterations - 1) pairs of width x 1,000 float32 weights, are added to the extrapolation
as `lbfgs_missing_mb`) and `--skip-inverse` (the Mahalanobis covariance, d x d float64, is
replaced in place by its inverted diagonal instead of its Cholesky inverse, which is in place
too: the same matrix, without 4.4 TFLOP at 16,384 latents).
`full_size_peak_mb` adds the missing history to the peak of the whole run, wherever that
was: an upper bound. `sampled_full_size_mb` is phase-aware: the resident size and numpy's
current bytes sampled every 0.2 s, each sample extrapolated on its own, the missing history
added only to samples taken during a probe fit; the record keeps both.

Mode `decode` writes ImageNet-sized JPEGs (500 x 375, quality 90, smooth random content) and
measures one worker's decode + resize + center crop rate through
`saeprobe.data.preprocess.load_image` with and without JPEG draft mode, and the workers needed
for 2,000 images/s.

Mode `thumbnails` times the image-folder loader's own per-image work (the DataLoader item of
`saeprobe.data.imagefolder`: open, draft, decode, resize, crop) on the same JPEGs without and
with the 64 px thumbnail extraction keeps for the atlas, and states the thumbnails' disk size
(uint8, 12,288 bytes an image) for ImageNet val and train.

  python benchmarks/paper_scale.py tasks --root /tmp/paper_scale --scale 0.05 --saes 2
  python benchmarks/paper_scale.py decode --root /tmp/paper_scale/jpeg --size 1000x750
  python benchmarks/paper_scale.py thumbnails --root /tmp/paper_scale/jpeg
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

TRAIN = "imagenet_train"
VAL = "imagenet_val"
# published sizes of the OpenOOD / MOS sets and the shifted ImageNet test sets
OOD = {
    "ssb_hard": 49000,
    "inaturalist": 10000,
    "sun": 10000,
    "places": 10000,
    "textures": 5640,
    "imagenet_o": 2000,
    "ninco": 5879,
    "openimage_o": 17632,
}
SHIFTED = {"imagenet_v2": 10000, "imagenet_r": 30000, "imagenet_a": 7500, "imagenet_sketch": 25000}
SIZES = {TRAIN: 1281167, VAL: 50000, **OOD, **SHIFTED}
SUBSET_CLASSES = {"imagenet_r": 200, "imagenet_a": 200}  # the 200-class subsets
GROUP_OF = {"near": ("ssb_hard", "ninco"), "far": ("inaturalist", "textures", "openimage_o"),
            "legacy": ("sun", "places", "imagenet_o")}  # fmt: skip
OOD_GROUPS = {dataset: group for group, sets in GROUP_OF.items() for dataset in sets}
MAX_TRAIN = 100000  # vision.max_train_images
KNN_BANK = 12811  # vision.ood_detection.knn_bank
LBFGS_HISTORY = 20  # saeprobe.eval.probes: L-BFGS history_size
PROBE_TASKS = ("ood_detection", "ood_generalization")
ARCHS = ("topk", "batchtopk", "relu", "matryoshka")
MODEL = "vit"
TASKS = ("semantics", "ood_detection", "ood_generalization", "ontology")
BLOCK = 65536


def wnid(i: int) -> str:
    return f"n{i:08d}"


def hierarchy_parents(n_classes: int, branching: int = 10) -> dict[str, str | None]:
    """A WordNet-shaped tree: root, then levels of `branching` children, the classes as leaves
    (class i is wnid(i); internal nodes are named i{level}_{j})."""
    parents: dict[str, str | None] = {"root": None}
    level, nodes = 0, ["root"]
    while len(nodes) * branching < n_classes:
        level += 1
        children = [f"i{level}_{j}" for j in range(len(nodes) * branching)]
        parents.update({c: nodes[j // branching] for j, c in enumerate(children)})
        nodes = children
    parents.update({wnid(i): nodes[i % len(nodes)] for i in range(n_classes)})
    return parents


def write_store(
    out: Path, sites: list[str], labels: np.ndarray, label_ids: np.ndarray, means: np.ndarray,
    seed: int,
) -> None:  # fmt: skip
    """One dataset's stores in the extraction layout: examples.csv, per site float16 shards
    of class mean + unit noise, example.npy, metadata.json."""
    n, dim = len(labels), means.shape[1]
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"index": np.arange(n), "label": labels}).to_csv(out / "examples.csv", index=False)
    (out / "extraction.json").write_text(json.dumps({"dataset": {}}))
    for s, site in enumerate(sites):
        d = out / site
        d.mkdir(exist_ok=True)
        rng = np.random.default_rng([seed, s])
        shard = np.lib.format.open_memmap(d / "shard_00000.npy", "w+", np.float16, (n, dim))
        total = np.zeros(dim)
        for a in range(0, n, BLOCK):
            ids = label_ids[a : a + BLOCK]
            x = means[ids] + rng.standard_normal((len(ids), dim), dtype=np.float32)
            shard[a : a + len(ids)] = x
            total += x.sum(axis=0, dtype=np.float64)
        shard.flush()
        del shard
        np.save(d / "example.npy", np.arange(n, dtype=np.int64))
        meta = {
            "dim": dim, "dtype": "float16", "site": site, "layer": int(site[1:].split("_")[0]),
            "count": n, "mean": (total / max(n, 1)).tolist(),
            "shards": [{"file": "shard_00000.npy", "rows": n}], "columns": ["example"],
        }  # fmt: skip
        (d / "metadata.json").write_text(json.dumps(meta))


def build(root: Path, scale: float, n_sites: int, n_saes: int, width: int, dim: int, seed: int):
    """Write the stores, SAEs and hierarchy under root (skipped when root/built.json matches)."""
    import torch

    from saeprobe.sae.config import SAEConfig
    from saeprobe.sae.io import save_sae
    from saeprobe.sae.models import build_sae

    spec = {"scale": scale, "sites": n_sites, "saes": n_saes, "width": width, "dim": dim}
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return
    n_classes = 1000
    sites = [f"L{11 + 6 * i}_cls" for i in range(n_sites)]
    rng = np.random.default_rng(seed)
    means = (1.5 * rng.standard_normal((n_classes, dim)) / math.sqrt(dim) * 8).astype(np.float32)
    for s, (dataset, size) in enumerate(SIZES.items()):
        n = max(round(size * scale), 20)
        if dataset in OOD:
            ids = rng.integers(0, n_classes, n)
            labels = np.array([f"ood_{i}" for i in ids % 50])
            ood_means = np.roll(means, 7, axis=1)[ids % 50] * 0.5
            write_store(root / "activations" / MODEL / dataset, sites, labels, np.arange(n),
                        ood_means, seed + 100 + s)  # fmt: skip
            continue
        ids = rng.integers(0, SUBSET_CLASSES.get(dataset, n_classes), n)
        labels = np.array([wnid(i) for i in range(n_classes)])[ids]
        write_store(root / "activations" / MODEL / dataset, sites, labels, ids, means, seed + s)
    torch.manual_seed(seed)
    for site in sites:
        for arch in ARCHS[:n_saes]:
            cfg = SAEConfig(arch=arch, width=width, k=32 if arch != "relu" else None)
            if arch == "matryoshka":
                cfg = SAEConfig(arch=arch, width=width, k=32,
                                matryoshka_prefixes=[width // 8, width // 2, width])  # fmt: skip
            sae = build_sae(cfg, dim).eval()
            with torch.no_grad():
                sae.initialize(seed)  # the trainer's initialisation: active latents, not zeros
            save_sae(sae, root / "saes" / MODEL / site / arch)
    parents = hierarchy_parents(n_classes)
    (root / "hierarchy.json").write_text(json.dumps(parents))
    (root / "sites.json").write_text(json.dumps(sites))
    marker.write_text(json.dumps(spec))


def run_task(
    task: str,
    root: Path,
    scale: float,
    probe_iter: int | None,
    seed: int = 0,
    skip_inverse: bool = False,
    samples: list | None = None,
) -> int:
    """One vision task on the built data, as its script calls the library (configs/paper.yaml
    settings; the semantics top-image grid, which reads the images, is left out). Returns the
    peak of the memory numpy allocated meanwhile (bytes, tracemalloc); `samples`, when given,
    gets MemorySampler's samples."""
    import torch

    from saeprobe.eval import ood_detection as det
    from saeprobe.eval import ood_generalization as gen
    from saeprobe.eval import probes

    sampler = MemorySampler()
    fit = probes.fit_probe

    def fit_probe(*args, **kwargs):
        if probe_iter is not None:  # fewer L-BFGS iterations: less time (lbfgs_missing_mb)
            kwargs["max_iter"] = probe_iter
        sampler.fitting = True
        try:
            return fit(*args, **kwargs)
        finally:
            sampler.fitting = False

    threads = torch.get_num_threads()
    with contextlib.ExitStack() as patched:  # the library as it was once the task returns
        patched.enter_context(mock.patch.object(det, "fit_probe", fit_probe))
        patched.enter_context(mock.patch.object(gen, "fit_probe", fit_probe))
        if skip_inverse:  # the same d x d matrix, touched in place, without the O(d^3) work
            patched.enter_context(
                mock.patch.object(det, "invert_spd_in_place", diagonal_inverse_in_place)
            )
        patched.callback(torch.set_num_threads, threads)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        return _run_task(task, root, scale, seed, sampler, samples)


def _run_task(
    task: str, root: Path, scale: float, seed: int, sampler: MemorySampler, samples: list | None
) -> int:
    """run_task's body, with the library patched."""
    import tracemalloc

    import torch

    from saeprobe.eval import ontology as ont
    from saeprobe.eval import ood_detection as det
    from saeprobe.eval import ood_generalization as gen
    from saeprobe.eval import semantics as sem
    from saeprobe.eval.features import ModelSites
    from saeprobe.hierarchy import Hierarchy

    cpu = torch.device("cpu")
    names = sorted(p.name for p in (root / "saes" / MODEL).glob("*/*") if p.is_dir())
    names = [a for a in ARCHS if a in names]
    sites = ModelSites(MODEL, json.loads((root / "sites.json").read_text()), names,
                       root / "activations", root / "saes")  # fmt: skip
    hierarchy = Hierarchy(json.loads((root / "hierarchy.json").read_text()))
    max_train = max(round(MAX_TRAIN * scale), 20)
    decays, val_fraction = [1e-5, 1e-4, 1e-3], 0.05
    if task not in TASKS:
        raise ValueError(f"--task: expected one of {TASKS}, got {task!r}")
    tracemalloc.start()
    sampler.start()
    if task == "semantics":
        sem.semantics(sites, VAL, hierarchy, [], None, top_n=16, min_active=8, device=cpu)
        sem.semantics_claim(sites, VAL, names[0], 16, seed, cpu)
    elif task == "ood_detection":
        _, scores, oracles = det.ood_detection(
            sites, TRAIN, VAL, list(OOD), knn_k=10, max_train=max_train, weight_decays=decays,
            val_fraction=val_fraction, seed=seed, device=cpu,
            knn_bank=max(round(KNN_BANK * scale), 20), ood_groups=OOD_GROUPS,
        )  # fmt: skip
        det.site_evidence(scores, oracles, VAL, "ssb_hard", "inaturalist", None, names[0],
                          "knn", names, seed)  # fmt: skip
        det.latent_contributions(sites, VAL, "ssb_hard", cpu)
    elif task == "ood_generalization":
        gen.ood_generalization(
            sites, TRAIN, [VAL, *SHIFTED], top_k=[8, 32, 128, 512], max_train=max_train,
            weight_decays=decays, val_fraction=val_fraction, mask_to_present=True, seed=seed,
            device=cpu, shifted=list(SHIFTED), primary=names[0],
            spurious=gen.SpuriousSettings(), control_dataset=VAL, per_class_k=[1, 4, 16],
        )  # fmt: skip
    elif task == "ontology":
        ont.ontology(sites, TRAIN, VAL, hierarchy, top_n=16, tau=0.9, min_active=8,
                     max_train=max_train, seed=seed, device=cpu)  # fmt: skip
        settings = {"min_active": 8, "null_trees": 200, "max_units": 4096}
        ont.ontology_claim(sites, VAL, hierarchy, names[0], settings, seed, cpu)
    sampler.stop()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if samples is not None:
        samples.extend(sampler.samples)
    return peak


class MemorySampler:
    """Every `period` seconds, in a thread: (resident bytes, bytes numpy holds now
    (tracemalloc), whether a probe is being fitted). The phase-aware extrapolation
    (`sampled_full_size_mb`) scales each sample's numpy bytes and adds L-BFGS's missing history
    only to the samples taken during a fit."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.fitting = period, False
        self.samples: list[tuple[int, int, bool]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import tracemalloc

        page = os.sysconf("SC_PAGE_SIZE")
        while not self._halt.wait(self.period):
            with open("/proc/self/statm") as fh:
                resident = int(fh.read().split()[1]) * page
            self.samples.append((resident, tracemalloc.get_traced_memory()[0], self.fitting))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()


def sampled_full_size_mb(samples: list, scale: float, missing_mb: float) -> float:
    """max over samples of resident + (1 / scale - 1) x numpy's bytes then (+ missing_mb
    during a probe fit), in MB; NaN without samples."""
    if not samples:
        return float("nan")
    return max(
        (resident + (1 / scale - 1) * numpy_now) / 2**20 + (missing_mb if fitting else 0.0)
        for resident, numpy_now, fitting in samples
    )


def diagonal_inverse_in_place(a: np.ndarray, block: int = 2048) -> bool:
    """--skip-inverse's stand-in for the Mahalanobis score's in-place Cholesky inverse: a (d, d)
    replaced by the inverse of its diagonal, in its own memory like the LAPACK inverse."""
    diagonal = a.diagonal().copy()
    for start in range(0, len(a), block):
        a[start : start + block] = 0.0
    a[np.diag_indices(len(a))] = 1 / diagonal
    return True


def lbfgs_missing_mb(probe_iter: int | None, width: int, n_classes: int = 1000) -> float:
    """L-BFGS's history pairs (20, `history_size` of the probes) that a fit of `probe_iter`
    iterations does not reach (it stores at most probe_iter - 1), in MB of float32 weights
    (width x n_classes) and biases: what a full fit holds beyond the measured peak."""
    if probe_iter is None:
        return 0.0
    missing = max(LBFGS_HISTORY - max(probe_iter - 1, 0), 0)
    return missing * 2 * (width * n_classes + n_classes) * 4 / 2**20


def measure(
    task: str,
    root: Path,
    scale: float,
    probe_iter: int | None,
    width: int = 16384,
    skip_inverse: bool = False,
) -> dict:
    """Run one task in a child process: wall time and peak RSS (MB) of that child."""
    side = root / f"numpy_peak_{task}.json"
    side.unlink(missing_ok=True)
    command = [sys.executable, __file__, "task", task, "--root", str(root), "--scale", str(scale)]
    if probe_iter is not None:
        command += ["--probe-iter", str(probe_iter)]
    if skip_inverse:
        command += ["--skip-inverse"]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"task {task} failed with exit code {child.returncode}")
    peak_mb = usage.ru_maxrss / 1024
    traced = json.loads(side.read_text())
    numpy_mb = traced["numpy_peak"] / 2**20
    missing = lbfgs_missing_mb(probe_iter, width) if task in PROBE_TASKS else 0.0
    sampled = sampled_full_size_mb(traced["samples"], scale, missing)
    return {"task": task, "scale": scale, "wall_s": round(wall, 1), "peak_rss_mb": round(peak_mb),
            "numpy_peak_mb": round(numpy_mb),
            "lbfgs_missing_mb": round(missing),
            "full_size_peak_mb": round(peak_mb + (1 / scale - 1) * numpy_mb + missing),
            "sampled_full_size_mb": round(sampled)}  # fmt: skip


# -- decoding --


def write_jpegs(out: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> list[Path]:
    """n JPEGs (quality 90) of smooth random content: upsampled noise plus gradients, which
    compress like photographs (about 100-150 KB at 500 x 375) rather than like pure noise."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = out / f"{i:05d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        coarse = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def decode_rate(paths: list[Path], draft: bool, image_size: int = 224) -> float:
    """Images per CPU second of one worker (this process, one thread): open, decode, resize the
    shorter side to image_size and center crop, as the ImageNet loader does (ViT-L/14). CPU
    time, not wall time: a loader worker has a core of its own, this shared machine does not."""
    import torch

    from saeprobe.data.preprocess import PreprocessParams, load_image

    torch.set_num_threads(1)
    params = PreprocessParams(image_size, image_size, (0.5,) * 3, (0.5,) * 3)
    start = time.process_time()
    for path in paths:
        load_image(path, params, draft_mode=draft)
    return len(paths) / (time.process_time() - start)


def loader_rate(paths: list[Path], thumbnail_px: int, image_size: int = 224) -> float:
    """Images per CPU second of one loader worker's items (`imagefolder._DecodeItems`, draft
    mode on as extraction runs it), with a `thumbnail_px` thumbnail of each image or none."""
    import torch

    from saeprobe.data.imagefolder import MAX_PIXELS, _DecodeItems
    from saeprobe.data.preprocess import PreprocessParams

    torch.set_num_threads(1)
    params = PreprocessParams(image_size, image_size, (0.5,) * 3, (0.5,) * 3)
    root = paths[0].parent
    items = _DecodeItems(
        root, [p.name for p in paths], params, MAX_PIXELS, thumbnail_px=thumbnail_px
    )
    start = time.process_time()
    for i in range(len(items)):
        _, _, thumb, error = items[i]
        if error or (thumbnail_px and thumb is None):
            raise RuntimeError(f"{paths[i]}: {error}")
    return len(paths) / (time.process_time() - start)


THUMBNAIL_SETS = {"imagenet_val": 50_000, "imagenet_train (300k, paper.yaml)": 300_000,
                  "imagenet_train (all)": 1_281_167}  # fmt: skip


def thumbnail_records(paths: list[Path], size: str, repeats: int, px: int = 64) -> list[dict]:
    """The loader's rate without and with thumbnails (best of `repeats` alternated runs), the
    thumbnail's cost per image, and the thumbnails' size on disk for the ImageNet sets."""
    loader_rate(paths, 0)  # warm the file cache
    rates: dict[int, list[float]] = {0: [], px: []}
    for _ in range(repeats):
        for side in rates:
            rates[side].append(loader_rate(paths, side))
    plain, with_thumbs = max(rates[0]), max(rates[px])
    records = [
        {"size": size, "thumbnail_px": side, "images_per_s_per_worker": round(max(r), 1),
         "workers_for_2000": math.ceil(2000 / max(r))}
        for side, r in rates.items()
    ]  # fmt: skip
    records.append(
        {"size": size, "thumbnail_ms_per_image": round(1e3 / with_thumbs - 1e3 / plain, 3)}
    )
    per_image = px * px * 3
    records += [{"dataset": name, "images": n, "thumbnails_gb": round(n * per_image / 1e9, 2)}
                for name, n in THUMBNAIL_SETS.items()]  # fmt: skip
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["tasks", "task", "decode", "thumbnails"])
    parser.add_argument("name", nargs="?", help="task mode: the task to run in this process")
    parser.add_argument("--root", type=Path, default=Path("/tmp/paper_scale"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--saes", type=int, default=4)
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--probe-iter",
        type=int,
        default=None,
        help="L-BFGS iterations per probe fit (default: the library's)",
    )
    parser.add_argument(
        "--skip-inverse",
        action="store_true",
        help="Mahalanobis: a diagonal stand-in for the O(d^3) in-place inverse (same matrix)",
    )
    parser.add_argument("--images", type=int, default=400, help="decode mode: JPEGs to time")
    parser.add_argument("--size", default="500x375", help="decode mode: JPEG width x height")
    parser.add_argument("--repeats", type=int, default=3, help="decode mode: best of")
    parser.add_argument("--out", type=Path, default=None, help="append the records (JSON lines)")
    args = parser.parse_args()  # fmt: skip
    if args.mode == "task":
        samples: list = []
        peak = run_task(args.name, args.root, args.scale, args.probe_iter,
                        skip_inverse=args.skip_inverse, samples=samples)  # fmt: skip
        traced = {"numpy_peak": peak, "samples": samples}
        (args.root / f"numpy_peak_{args.name}.json").write_text(json.dumps(traced))
        return
    if args.mode == "thumbnails":
        width, height = (int(v) for v in args.size.split("x"))
        paths = write_jpegs(args.root / args.size, args.images, (width, height))
        records = thumbnail_records(paths, args.size, args.repeats)
    elif args.mode == "decode":
        width, height = (int(v) for v in args.size.split("x"))
        paths = write_jpegs(args.root / args.size, args.images, (width, height))
        decode_rate(paths, draft=False)  # warm the file cache
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # alternated, best of: the machine is shared
            for draft in (False, True):
                rates[draft].append(decode_rate(paths, draft))
        records = []
        for draft, measured in rates.items():
            rate = max(measured)
            records.append({"size": args.size, "draft": draft,
                            "images_per_s_per_worker": round(rate, 1),
                            "workers_for_2000": math.ceil(2000 / rate)})  # fmt: skip
    else:
        start = time.perf_counter()
        build(args.root, args.scale, args.sites, args.saes, args.width, args.dim, seed=0)
        print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        records = []
        for task in args.tasks:
            record = measure(task, args.root, args.scale, args.probe_iter, args.width,
                             args.skip_inverse)  # fmt: skip
            record.update(sites=args.sites, saes=args.saes, width=args.width, dim=args.dim,
                          probe_iter=args.probe_iter, skip_inverse=args.skip_inverse)  # fmt: skip
            print(json.dumps(record), file=sys.stderr, flush=True)
            records.append(record)
    if args.out is not None:
        with open(args.out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    print(json.dumps(records))


if __name__ == "__main__":
    main()
