"""The best network found beside published MNIST networks, and whether its training data makes that fair.

One section shared by run and study reports: LeNet-300-100 and its pruned version (Han et al. 2015), the
best network of the run or study, and a note or caveat on what that network trained and was tested on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rankprune.report.document import _count, _Document, _reason

FULL_MNIST_TRAIN = 60_000  # images in MNIST's training set; the published networks trained on all of them
DIGITS_IMAGES = 1_797  # scikit-learn's load_digits (a constant here: importing scikit-learn costs seconds)


@dataclass(frozen=True)
class Published:
    network: str
    parameters: int
    error: float  # test error on MNIST's 10,000 test images, %
    pruning: str
    source: str
    approximate: bool = False


# Han, Pool, Tran, Dally (2015), "Learning both Weights and Connections for Efficient Neural Networks",
# NeurIPS, Table 1: LeNet-300-100 (LeCun et al. 1998: 784-300-100-10, 266,610 weights and biases).
PUBLISHED = (
    Published("LeNet-300-100 (784-300-100-10, dense)", 266_610, 1.64, "none",
              "LeCun et al. 1998; error as trained in Han et al. 2015, Table 1"),
    Published("LeNet-300-100, pruned", 22_000, 1.59, "unstructured (single weights), 12x fewer",
              "Han et al. 2015, Table 1", approximate=True),
)


# --- the training data, against published MNIST figures ----------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    note: str  # one sentence for the report
    comparable: bool  # the full MNIST training set: the published figures' footing
    images: int | None  # training images the network saw (after the train fraction and validation split)
    test_images: int | None


def _idx_count(path: Path) -> int | None:
    """The item count in an IDX file's header (bytes 4-8, big-endian), without reading the data."""
    try:
        with path.open("rb") as fh:
            header = fh.read(8)
    except OSError:
        return None
    return int.from_bytes(header[4:8], "big") if len(header) == 8 else None


_DATASET_NAMES = {"digits": "scikit-learn's 8x8 digits", "fashion-mnist": "Fashion-MNIST", "kmnist": "KMNIST", "mnist": "MNIST"}


def training_data(data: dict, described: dict | None = None) -> TrainingData:
    """What a run's data section trained on, and whether that is the published MNIST figures' footing.

    `described` is the run's data.json (split sizes recorded when it ran); runs from before it existed
    fall back to counting the dataset files' headers where they lie now.
    """
    dataset = data.get("dataset", "mnist")
    fraction, val_fraction = float(data.get("train_fraction", 1.0)), float(data.get("val_fraction", 0.1))
    name = _DATASET_NAMES.get(dataset, dataset)
    where = ""
    recorded = bool(described) and all(k in described for k in ("n_train", "n_val", "n_test", "n_train_pool"))
    if recorded:
        images, n_val, test, pool = (described[k] for k in ("n_train", "n_val", "n_test", "n_train_pool"))
    elif dataset == "digits":
        test = DIGITS_IMAGES // 5  # as data._digits_arrays splits it
        pool: int | None = DIGITS_IMAGES - test
    else:
        from rankprune.data import default_data_dir, expected_files

        root = Path(data["data_dir"]) if data.get("data_dir") else default_data_dir()
        raw, names = expected_files(dataset, root)
        where = str(raw)
        pool = _idx_count(raw / next(n for n in names if n.startswith("train-images")))
        test = _idx_count(raw / next(n for n in names if n.startswith("t10k-images")))
    if not recorded:
        images = n_val = None
    if pool is not None and not recorded:  # carved as data.load carves it
        used = max(2, round(fraction * pool))
        n_val = max(1, round(val_fraction * used))
        images = used - n_val
    part = f" (train fraction {fraction:g})" if fraction < 1 else ""

    if dataset != "mnist":
        seen = f"{images:,} images of {name}" if images is not None else name
        return TrainingData(f"trained on {seen}{part}, not MNIST: not directly comparable", False, images, test)
    if pool is None:
        return TrainingData(f"MNIST's files are not in {where} here, so whether the network trained on the full "
                            "60k training set cannot be checked: compare with care", False, None, test)
    if pool < FULL_MNIST_TRAIN:
        subset = f"a {(pool + test) / 1000:g}k MNIST subset" if test else f"a {pool:,}-image MNIST subset"
        return TrainingData(f"trained on {images:,} images{part} of {subset}, not the 60k training set: "
                            "not directly comparable", False, images, test)
    if fraction < 1:
        return TrainingData(f"trained on {images:,} images, a {fraction:g} fraction of the 60k MNIST training set: "
                            "not directly comparable", False, images, test)
    return TrainingData(f"trained on {images:,} of the 60,000 MNIST training images ({n_val:,} held out for "
                        "validation; the published networks trained on all 60,000)", True, images, test)


# --- the section -------------------------------------------------------------------------------------
def _reference(doc: _Document, best: dict | None, data: dict | None, missing_data: str = "",
               described: dict | None = None) -> None:
    """The best network found (MLP or CNN) beside LeNet-300-100 and its pruned version, with the training-data caveat."""
    doc.add("## Reference: the best network found beside published MNIST networks", "")
    rows = [{"network": p.network, "parameters": ("about " if p.approximate else "") + f"{p.parameters:,}",
             "test error (%)": f"{p.error:.2f}", "pruning": p.pruning, "source": p.source} for p in PUBLISHED]
    if best is not None:
        rows.append({"network": best["network"], "parameters": _count(best["parameters"]),
                     "test error (%)": f"{100 * (1 - best['test_acc']):.2f}", "pruning": best["pruning"],
                     "source": best["source"]})
    doc.table(pd.DataFrame(rows))
    if best is None:
        doc.add("*No finished network yet: nothing to compare.*", "")
    if data is None:
        doc.add(f"**Caveat:** {missing_data or 'the training data is unknown'}: compare with care.", "")
    else:
        try:
            td = training_data(data, described)
        except Exception as exc:  # a data folder we cannot inspect must not cost the whole report
            doc.add(f"**Caveat:** the training data could not be checked ({_reason(exc)}): compare with care.", "")
        else:
            tested = (f" Test error here is on {td.test_images:,} test images; the published on MNIST's 10,000."
                      if td.test_images and td.test_images != 10_000 else "")
            doc.add(f"**{'Note' if td.comparable else 'Caveat'}:** {td.note}.{tested}", "")
    doc.add("Han et al. remove single weights (unstructured: the matrices keep their shape and need sparse kernels "
            "to run faster); rank-pruning removes whole units (structured: a smaller dense network).", "")
