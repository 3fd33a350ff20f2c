"""The distributed mode for real: `rankprune study run` workers sharing one study in a PostgreSQL
server (Debian's server binaries, started on loopback by tests/pg.py), and Optuna's heartbeat
failing the trial of a worker killed with SIGKILL.

Skips where no server binaries exist; .ci/run installs them and sets RANKPRUNE_REQUIRE_POSTGRES=1,
which turns that skip into a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import cluster
import pg
from rankprune.runfolder import EPOCHS, RunFolder
from rankprune.study import open_storage, trial_folder
from studyfiles import tiny_study_toml
from cli_checks import one_line_error

# A guard so a hung child fails the test instead of the suite; not a timing assertion.
GUARD_S = 300
HEARTBEAT_S = 1
GRACE_S = 2  # what `--heartbeat 1` sets (cli._run_study: max(2 * heartbeat, 2))
COMPLETE, FAIL, RUNNING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING


@pytest.fixture(scope="module")
def postgres():
    reason = pg.unavailable_reason()
    if reason is not None:
        if os.environ.get("RANKPRUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RANKPRUNE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    with pg.PostgresServer() as server:
        yield server


def study_text(max_epochs: int = 2) -> str:
    return tiny_study_toml("shared", max_epochs=max_epochs)


def child_env() -> dict[str, str]:
    # One OpenMP thread per child: see conftest.py (oversubscribed 2-core machine).
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def worker_args(file: Path, url: str, root: Path, n_trials: int) -> list[str]:
    return [sys.executable, "-m", "rankprune.cli", "study", "run", str(file), "--storage", url, "--root", str(root),
            "--n-trials", str(n_trials), "--heartbeat", str(HEARTBEAT_S)]


def start_worker(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(worker_args(*args), cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def create_schema(url: str) -> None:
    """Create Optuna's tables before the workers start (see test_workers_may_create_the_schema_together)."""
    open_storage(url).engine.dispose()


def load(url: str, name: str = "shared") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


# --- two workers, one study ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_workers(postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two_workers")
    (tmp / "study.toml").write_text(study_text())
    url = postgres.create_database("two_workers")
    create_schema(url)
    # each worker its own root, so a trial's artifact_root says which worker ran it
    roots = [tmp / "worker1", tmp / "worker2"]
    procs = [start_worker(tmp / "study.toml", url, root, 3, cwd=tmp) for root in roots]
    try:
        outputs = [p.communicate(timeout=GUARD_S) for p in procs]
    finally:
        stop(procs)
    return [p.returncode for p in procs], outputs, url, roots


def test_two_workers_complete_the_trials_both_asked_for(two_workers):
    codes, outputs, url, roots = two_workers
    for code, (_out, err) in zip(codes, outputs):
        assert code == 0, err
        assert "Traceback" not in err
    trials = load(url).trials
    assert [t.state for t in trials] == [COMPLETE] * 6  # 3 + 3
    assert sorted(t.number for t in trials) == list(range(6))  # no duplicate (or missing) trial number
    for root in roots:
        mine = [t for t in trials if Path(t.user_attrs["artifact_root"]) == root.resolve()]
        assert len(mine) == 3  # both workers really worked
        assert sorted(p.name for p in (root / "studies" / "shared").iterdir()) == [f"trial-{t.number:04d}" for t in mine]


def test_two_workers_sample_different_architectures(two_workers):
    _codes, _outputs, url, roots = two_workers
    trials = load(url).trials
    per_worker = [[t.params for t in trials if Path(t.user_attrs["artifact_root"]) == root.resolve()] for root in roots]
    assert per_worker[0] != per_worker[1]


# --- a worker killed mid-trial --------------------------------------------------------------------------------
def wait_for_a_trial_in_training(url: str, name: str, proc: subprocess.Popen) -> optuna.trial.FrozenTrial:
    """The worker's RUNNING trial once its first epoch is written (its heartbeat started before that)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                running = optuna.load_study(study_name=name, storage=storage).get_trials(states=(RUNNING,))
            except KeyError:  # the study does not exist yet
                running = []
            for t in running:
                folder = t.user_attrs.get("run_folder")
                if folder and RunFolder(trial_folder(folder, t.user_attrs.get("artifact_root"))).rows(EPOCHS):
                    return t
            time.sleep(0.1)
        raise AssertionError("no trial started training")
    finally:
        storage.engine.dispose()


def test_a_killed_worker_leaves_its_trial_failed_and_the_study_usable(postgres, tmp_path):
    # Worker A trains for up to 400 epochs, far longer than it takes to see its trial running and
    # kill it; worker B runs the ordinary 2-epoch trials of the same study.
    (tmp_path / "slow.toml").write_text(study_text(max_epochs=400))
    (tmp_path / "fast.toml").write_text(study_text())
    url = postgres.create_database("heartbeat")
    create_schema(url)
    a = start_worker(tmp_path / "slow.toml", url, tmp_path / "a", 1, cwd=tmp_path)
    try:
        killed = wait_for_a_trial_in_training(url, "shared", a)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=GUARD_S)
    finally:
        stop([a])
    assert a.returncode == -signal.SIGKILL
    assert load(url).trials[killed.number].state == RUNNING  # nobody has marked it yet

    # Optuna fails stale trials when a worker starts a trial; wait until the killed trial's last
    # heartbeat is older than the grace period, so B's first trial finds it stale.
    time.sleep(GRACE_S + 1)
    b = subprocess.run(worker_args(tmp_path / "fast.toml", url, tmp_path / "b", 2), cwd=tmp_path, env=child_env(),
                       capture_output=True, text=True, timeout=GUARD_S)
    assert b.returncode == 0, b.stderr

    trials = load(url).trials
    assert trials[killed.number].state == FAIL
    others = [t for t in trials if t.number != killed.number]
    assert [t.state for t in others] == [COMPLETE] * 2  # the study went on in B
    assert all(Path(t.user_attrs["artifact_root"]) == (tmp_path / "b").resolve() for t in others)
    assert sorted(t.number for t in trials) == list(range(3))


# --- workers opening a fresh database together ----------------------------------------------------------------
def test_workers_may_create_the_schema_together(postgres):
    url = postgres.create_database("fresh")
    # Make "at once" deterministic: an open transaction that is creating `studies` stops both
    # workers inside their CREATE TABLEs until it rolls back.
    blocker = postgres.connect("fresh")
    blocker.cursor().execute("CREATE TABLE studies (study_id integer)")
    errors: list[Exception] = []
    storages = []

    def open_it() -> None:
        try:
            storages.append(open_storage(url))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    watch = postgres.connect()
    watch.autocommit = True
    try:
        deadline = time.monotonic() + GUARD_S
        waiting = 0
        while waiting < 2 and time.monotonic() < deadline:
            with watch.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'fresh' AND wait_event_type = 'Lock'")
                waiting = cur.fetchone()[0]
            time.sleep(0.05)
    finally:
        blocker.rollback()
        blocker.close()
        watch.close()
        for t in threads:
            t.join(GUARD_S)
        for s in storages:
            s.engine.dispose()
    assert waiting == 2, "the two workers never both waited on the schema"
    for exc in errors:
        raise exc
    assert len(storages) == 2
    optuna.create_study(study_name="shared", storage=url)  # and the schema works


def test_the_readme_address_form_works(postgres, tmp_path, capsys):
    """The README writes `postgresql://user@host/db`: SQLAlchemy 2.1 reads that scheme as psycopg 3, which
    must be installed for the address to work as written (here and in optuna's own CLI and dashboard)."""
    from rankprune.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--storage postgresql://user@host/db" in readme
    postgres.create_database("plain_form")
    url = f"postgresql://postgres@127.0.0.1:{postgres.port}/plain_form"
    (tmp_path / "study.toml").write_text(tiny_study_toml("plain", max_epochs=1))
    assert main(["study", "run", str(tmp_path / "study.toml"), "--storage", url, "--root", str(tmp_path), "--n-trials", "1"]) == 0, \
        capsys.readouterr().err
    assert main(["study", "classes", "plain", "--storage", url]) == 0, capsys.readouterr().err
    assert [t.state for t in optuna.load_study(study_name="plain", storage=url).trials] == [COMPLETE]


# --- someone else's database (issue 18) -------------------------------------------------------------------------
def table_names(postgres, dbname: str) -> list[str]:
    conn = postgres.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_a_database_of_other_tables_is_refused_and_reading_one_creates_nothing(postgres, tmp_path, capsys):
    from rankprune.cli import main

    url = postgres.create_database("theirs")
    conn = postgres.connect("theirs")
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id integer PRIMARY KEY, name text)")
        cur.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
    conn.close()
    (tmp_path / "study.toml").write_text(tiny_study_toml("theirs", max_epochs=1))
    run = ["study", "run", str(tmp_path / "study.toml"), "--storage", url, "--root", str(tmp_path / "runs"), "--n-trials", "1"]

    # read-only commands find no study and add no table, on this database and on an empty one
    empty = postgres.create_database("empty")
    for address in (url, empty):
        line = one_line_error(capsys, main(["study", "classes", "theirs", "--storage", address]))
        assert "(it holds no Optuna tables)" in line
    assert table_names(postgres, "theirs") == ["customers", "orders"]
    assert table_names(postgres, "empty") == []

    # study run refuses the database, naming its tables, unless told otherwise
    line = one_line_error(capsys, main(run))
    assert "holds tables that are not Optuna's (customers, orders)" in line and "--allow-other-tables" in line
    assert table_names(postgres, "theirs") == ["customers", "orders"]
    assert not (tmp_path / "runs").exists()
    assert main([*run, "--allow-other-tables"]) == 0, capsys.readouterr().err
    assert [t.state for t in load(url, "theirs").trials] == [COMPLETE]
    assert {"customers", "orders", "studies", "trials"} <= set(table_names(postgres, "theirs"))


# --- the cluster: three workers, a SIGKILL and a SIGTERM, one shared artifact root (tests/cluster.py) -------------
@pytest.mark.slow  # 38 s: issue 23's acceptance, run with `python -m pytest -m slow tests/test_postgres.py`
def test_three_workers_one_killed_one_terminated_complete_every_cell_exactly_once(postgres, tmp_path):
    url = postgres.create_database("cluster")
    create_schema(url)
    cluster.three_workers_one_killed_one_terminated(url, tmp_path)
