"""Run folders through an Optuna artifact store (rankprune.artifacts), for machines that share a study storage but no
filesystem: every finished trial's run folder is uploaded before the trial is told COMPLETE, and a reader on another
machine (another --root, nothing of the worker's on disk) fetches what it needs into its cache. A file store and S3
(moto's server on loopback, spoken to over HTTP by boto3 as it would speak to AWS or MinIO)."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import optuna
import pytest

from rankprune.artifacts import ARTIFACT_ATTR, STORE_ATTR, ArtifactUnavailable, Fetcher, open_store, pack
from rankprune.cli import main

STUDY = """[study]
name = "shared"
mode = "evolve"
sampler = "grid"
n_trials = 2

[base.data]
dataset = "digits"

[base.train]
max_epochs = 2

[space]
depth = 1
width = { choices = [8, 12] }
"""


def quiet(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def run_and_read_elsewhere(tmp_path: Path, store: str) -> dict:
    """A study run on 'machine A' uploading to `store`; its report made on 'machine B' (another root, another cache)."""
    spec = tmp_path / "shared.toml"
    spec.write_text(STUDY)
    url = f"sqlite:///{tmp_path}/studies.sqlite3"  # the shared storage, in neither machine's root
    code, err = quiet(["study", "run", str(spec), "--root", str(tmp_path / "a"), "--storage", url,
                       "--artifact-store", store])
    assert code == 0, err
    study = optuna.load_study(study_name="shared", storage=url)
    cache = tmp_path / "b-cache"
    code, err = quiet(["report", "shared", "--root", str(tmp_path / "b"), "--storage", url, "--out",
                       str(tmp_path / "b-report"), "--artifact-cache", str(cache)])
    assert code == 0, err
    return {"study": study, "cache": cache, "report": (tmp_path / "b-report" / "report.md").read_text(), "url": url,
            "spec": spec, "tmp": tmp_path}


@pytest.fixture(scope="module")
def on_a_file_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("file-store")
    return {**run_and_read_elsewhere(tmp, str(tmp / "store")), "store": tmp / "store"}


def test_a_file_store_holds_every_trial_and_a_reader_elsewhere_fetches_the_best_ones_folder(on_a_file_store):
    got, store = on_a_file_store, on_a_file_store["store"]
    tmp_path = got["tmp"]
    trials = got["study"].trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    ids = {t.user_attrs[ARTIFACT_ATTR] for t in trials}
    assert len(ids) == 2 and {p.name for p in store.iterdir()} == ids
    assert {t.user_attrs[STORE_ATTR] for t in trials} == {f"file:{store.resolve()}"}
    assert got["study"].user_attrs[STORE_ATTR] == f"file:{store.resolve()}"
    # Optuna's own record of the artifact, which its dashboard lists
    assert all(f"artifacts:{t.user_attrs[ARTIFACT_ATTR]}" in t.system_attrs for t in trials)
    assert "is not here" not in got["report"] and "could not be fetched" not in got["report"]
    assert f"are fetched into `{got['cache']}/ARTIFACT_ID/trial-NNNN`" in got["report"]
    best = max(trials, key=lambda t: (t.user_attrs["val_acc"], -t.number))
    fetched = got["cache"] / best.user_attrs[ARTIFACT_ATTR] / f"trial-{best.number:04d}"
    original = tmp_path / "a" / "studies" / "shared" / f"trial-{best.number:04d}"
    # the same files as the worker's folder, less the writer's lock and lease
    mine = sorted(p.relative_to(original).as_posix() for p in original.rglob("*") if p.name not in (".lock", ".lease"))
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*")) == mine
    assert (fetched / "epochs.jsonl").read_bytes() == (original / "epochs.jsonl").read_bytes()
    assert not (tmp_path / "b" / "studies").exists()  # the reader wrote nothing under its root but its report
    # a cross-entropy study: the report reads the best trial's folder and the first one's (no N_Delta), no more
    assert len(list(got["cache"].iterdir())) <= 2


def test_a_reader_on_the_machine_and_root_that_wrote_a_trial_uses_its_own_folder(on_a_file_store):
    tmp_path = on_a_file_store["tmp"]
    code, err = quiet(["report", "shared", "--root", str(tmp_path / "a"), "--storage", on_a_file_store["url"],
                       "--out", str(tmp_path / "a-report"), "--artifact-cache", str(tmp_path / "a-cache")])
    assert code == 0, err
    assert not (tmp_path / "a-cache").exists()  # nothing fetched: the folder is here


def test_a_study_that_uploads_refuses_a_worker_without_the_store_and_bad_store_names(on_a_file_store):
    tmp_path, url = on_a_file_store["tmp"], on_a_file_store["url"]
    spec = str(on_a_file_store["spec"])
    trials = len(optuna.load_study(study_name="shared", storage=url).trials)
    code, err = quiet(["study", "run", spec, "--root", str(tmp_path / "a"), "--storage", url, "--n-trials", "1"])
    assert code == 2 and "Traceback" not in err
    assert f"keeps its trials' run folders in the artifact store file:{(tmp_path / 'store').resolve()}" in err
    assert len(optuna.load_study(study_name="shared", storage=url).trials) == trials  # refused before asking
    for bad, says in (("gs://bucket", "not gs://"), ("s3://", "names no bucket")):
        code, err = quiet(["study", "run", spec, "--root", str(tmp_path / "c"), "--artifact-store", bad])
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_artifact_is_said_in_the_report_not_raised(on_a_file_store):
    tmp_path = on_a_file_store["tmp"]
    empty = tmp_path / "empty-store"  # a store that lost them, given as this machine's mount of it
    empty.mkdir()
    out = tmp_path / "c-report"
    code, err = quiet(["report", "shared", "--root", str(tmp_path / "c"), "--storage", on_a_file_store["url"],
                       "--out", str(out), "--artifact-store", str(empty), "--artifact-cache", str(tmp_path / "c-cache")])
    assert code == 0 and "Traceback" not in err, err
    assert "could not be fetched" in (out / "report.md").read_text()


def test_the_fetcher_refuses_ids_names_and_archives_that_would_leave_its_cache(tmp_path):
    store_dir = tmp_path / "store"
    store = open_store(str(store_dir), create=True)
    fetcher = Fetcher(cache=tmp_path / "cache")
    url = f"file:{store_dir}"
    with pytest.raises(ArtifactUnavailable, match="not an Optuna artifact id"):
        fetcher.folder({ARTIFACT_ATTR: "../../etc", STORE_ATTR: url, "run_folder": "trial-0000"}, "x")
    good = str(uuid.uuid4())
    with pytest.raises(ArtifactUnavailable, match="not a file or folder name"):
        fetcher.fetch(url, good, "..", folder=True)
    # a tar whose entry climbs out of the folder it unpacks into
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../../escaped")
    with open(evil, "rb") as f:
        store.write(good, f)
    with pytest.raises(ArtifactUnavailable):
        fetcher.folder({ARTIFACT_ATTR: good, STORE_ATTR: url, "run_folder": "trial-0000"}, "x")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "cache" / "escaped").exists()
    # a missing artifact, and a store that is not there, are ArtifactUnavailable (an OSError readers list)
    with pytest.raises(ArtifactUnavailable, match="is not in"):
        fetcher.folder({ARTIFACT_ATTR: str(uuid.uuid4()), STORE_ATTR: url, "run_folder": "trial-0001"}, "x")
    with pytest.raises(ArtifactUnavailable, match="no artifact store"):
        Fetcher(cache=tmp_path / "c2").folder({ARTIFACT_ATTR: good, STORE_ATTR: f"file:{tmp_path / 'gone'}",
                                               "run_folder": "trial-0000"}, "x")


def test_pack_leaves_out_the_writers_lock_and_lease(tmp_path):
    folder = tmp_path / "trial-0007"
    folder.mkdir()
    for name in ("config.json", ".lock", ".lease"):
        (folder / name).write_text("{}")
    pack(folder, tmp_path / "p.tar.gz")
    with tarfile.open(tmp_path / "p.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["trial-0007", "trial-0007/config.json"]


# --- S3, served on loopback ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """An S3 endpoint on loopback (moto's server, a separate process speaking S3's HTTP API) with a bucket `lab`;
    boto3 is pointed at it the way a user points it at MinIO: AWS_ENDPOINT_URL_S3."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
            time.sleep(0.1)
        for k, v in {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "lab",
                     "AWS_SECRET_ACCESS_KEY": "lab", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket="lab")
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def test_an_s3_store_under_a_prefix_holds_every_trial_and_a_reader_elsewhere_fetches_it(tmp_path, s3):
    got = run_and_read_elsewhere(tmp_path, "s3://lab/groups/rank")
    trials = got["study"].trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="lab")["Contents"])
    assert keys == sorted(f"groups/rank/{t.user_attrs[ARTIFACT_ATTR]}" for t in trials)
    assert "is not here" not in got["report"] and "could not be fetched" not in got["report"]
    best = max(trials, key=lambda t: (t.user_attrs["val_acc"], -t.number))
    fetched = got["cache"] / best.user_attrs[ARTIFACT_ATTR] / f"trial-{best.number:04d}"
    original = tmp_path / "a" / "studies" / "shared" / f"trial-{best.number:04d}"
    assert (fetched / "epochs.jsonl").read_bytes() == (original / "epochs.jsonl").read_bytes()


def test_a_bucket_that_is_not_there_is_one_line_before_any_trial(tmp_path, s3):
    spec = tmp_path / "shared.toml"
    spec.write_text(STUDY)
    url = f"sqlite:///{tmp_path}/studies.sqlite3"
    code, err = quiet(["study", "run", str(spec), "--root", str(tmp_path / "a"), "--storage", url,
                       "--artifact-store", "s3://no-such-bucket"])
    assert code == 2 and "artifact store s3://no-such-bucket: no such bucket" in err and "Traceback" not in err, err
    assert not (tmp_path / "studies.sqlite3").exists()  # refused before the storage was made


def test_a_suite_run_with_a_store_reports_alike_from_a_machine_without_its_root(tmp_path):
    """The findings report reads run folders (the cost section's curves) and baseline result files; from another root
    it fetches both and writes the same report as the runner's own machine, but for the commands it quotes."""
    from test_cost import write_suite

    suite = str(write_suite(tmp_path / "suite"))
    url = f"sqlite:///{tmp_path}/studies.sqlite3"
    store = tmp_path / "store"
    code, err = quiet(["findings", "run", suite, "--root", str(tmp_path / "a"), "--storage", url,
                       "--artifact-store", str(store)])
    assert code == 0, err
    study = optuna.load_study(study_name="q3_tiny", storage=url)
    baselines = {k: v for k, v in study.user_attrs.items() if k.startswith("baseline:loop:")}
    assert sorted(baselines) == ["baseline:loop:depth-1-seed-0", "baseline:loop:depth-1-seed-1"]
    assert len(list(store.iterdir())) == 4 + 2  # four trials' folders, two baseline results
    reports = {}
    for machine in ("a", "b"):
        out = tmp_path / f"report-{machine}"
        code, err = quiet(["findings", "report", suite, "--root", str(tmp_path / machine), "--storage", url,
                           "--out", str(out), "--artifact-cache", str(tmp_path / f"cache-{machine}")])
        assert code == 0, err
        reports[machine] = [line for line in (out / "findings.md").read_text().splitlines() if "rankprune findings" not in line]
    assert reports["b"] == reports["a"]
    assert not (tmp_path / "cache-a").exists() and len(list((tmp_path / "cache-b").iterdir())) == 4 + 2
    assert not (tmp_path / "b" / "baselines").exists()


def test_an_upload_the_store_refuses_fails_its_trial_with_the_reason_and_keeps_the_folder(tmp_path, monkeypatch):
    import rankprune.artifacts as artifacts

    def refused(trial, store, url, folder):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "upload_run", refused)
    spec = tmp_path / "shared.toml"
    spec.write_text(STUDY.replace("n_trials = 2", "n_trials = 1").replace("[8, 12]", "[8]"))
    url = f"sqlite:///{tmp_path}/studies.sqlite3"
    code, err = quiet(["study", "run", str(spec), "--root", str(tmp_path / "a"), "--storage", url,
                       "--artifact-store", str(tmp_path / "store")])
    assert "Traceback" not in err
    [trial] = optuna.load_study(study_name="shared", storage=url).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith(
        f"its run folder could not be uploaded to file:{(tmp_path / 'store').resolve()}: OSError")
    assert (tmp_path / "a" / "studies" / "shared" / "trial-0000" / "epochs.jsonl").is_file()  # the work stays here


def test_two_readers_fetching_one_folder_at_once_both_get_it_whole(tmp_path):
    import threading

    folder = tmp_path / "trial-0003"
    folder.mkdir()
    for i in range(20):
        (folder / f"part-{i}.json").write_text("x" * 10_000)
    store = open_store(str(tmp_path / "store"), create=True)
    pack(folder, tmp_path / "p.tar.gz")
    artifact_id = str(uuid.uuid4())
    with open(tmp_path / "p.tar.gz", "rb") as f:
        store.write(artifact_id, f)
    attrs = {ARTIFACT_ATTR: artifact_id, STORE_ATTR: f"file:{tmp_path / 'store'}", "run_folder": "studies/s/trial-0003"}
    got, errors = [], []

    def read() -> None:
        try:
            got.append(Fetcher(cache=tmp_path / "cache").folder(attrs, "nowhere"))
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    assert not errors and len(set(got)) == 1
    [where] = set(got)
    assert sorted(p.name for p in where.iterdir()) == sorted(f"part-{i}.json" for i in range(20))
    assert [p.name for p in where.parent.iterdir()] == ["trial-0003"]  # no temporary folder left beside it
