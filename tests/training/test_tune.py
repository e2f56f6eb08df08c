"""`plexrec tune` on tiny synthetic Criteo data: a real Optuna SQLite study, a real MLflow store,
real training runs through `run_train`; the search-space checks; the trainer's pruning hook."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from plexrec.features.config import load_toml
from plexrec.features.errors import ConfigError, PlexrecError
from plexrec.features.synth import write_criteo
from plexrec.training.config import load_config
from plexrec.training.launch import LaunchOptions, run_train
from plexrec.training.tune import ROLE_TAG, TRIAL_TAG, TuneOptions, run_tune
from plexrec.training.tune_space import check_keys, load_space, toml_text
from tests.conftest import CONFIGS

MAX_STEPS, EVAL_EVERY = 30, 10
SPACE = """
[study]
seed = 3
sampler_startup_trials = 2
pruner_startup_trials = 1

[params."optim.embedding_lr"]
kind = "float"
low = 0.02
high = 0.5
log = true

[params."layout.dim"]
kind = "categorical"
choices = [8, 16]
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a 3,000-row synthetic Criteo TSV, a prepared-cache folder the tests share)."""
    root = tmp_path_factory.mktemp("tune-data")
    write_criteo(root / "train.txt", 3_000, seed=0, progress=False)
    return root / "train.txt", root / "prepared"


def _options(data: tuple[Path, Path], tmp: Path, space: str, trials: int, name: str,
             *extra: str) -> TuneOptions:
    (tmp / "space.toml").write_text(space)
    return TuneOptions(
        config=CONFIGS / "criteo_dlrm.toml", space=tmp / "space.toml", trials=trials, name=name,
        data=str(data[0]),
        overrides=[f"data.cache_dir={data[1]}", f"train.runs_root={tmp / 'runs'}",
                   "data.batch_size=64", f"train.max_steps={MAX_STEPS}",
                   f"train.eval_every={EVAL_EVERY}", "mlflow.log_model=false",
                   # The trials' evaluation steps are what these tests read; the shipped
                   # config's first-order fit is tested in tests/training/test_models.py.
                   "train.first_order_epochs=0", *extra])


@pytest.mark.slow
def test_three_trials_are_children_of_one_parent_and_the_winner_is_trained_on_test(
        data: tuple[Path, Path], tmp_path: Path, mlflow_uri: str) -> None:
    result = run_tune(_options(data, tmp_path, SPACE, 3, "three"))
    assert result["trials"] == 3 == result["complete"] + result["pruned"] + result["fail"]
    assert result["complete"] >= 1
    tune_dir = Path(result["tune_dir"])
    assert tune_dir == (tmp_path / "runs" / "criteo" / "tune-three").resolve()
    assert (tune_dir / "optuna.db").is_file()

    completed = [r for r in result["summary"] if r["state"] == "COMPLETE"]
    best_row = max(completed, key=lambda r: r["val_auc"])
    assert result["best_trial"] == best_row["trial"]
    assert result["best_val_auc"] == pytest.approx(best_row["val_auc"])
    assert result["best_params"] == best_row["params"]

    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_auc"] == pytest.approx(result["best_val_auc"])
    assert parent.data.metrics["final_test_auc"] == pytest.approx(result["test_auc"])
    assert parent.data.tags["best.layout.dim"] == str(result["best_params"]["layout.dim"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "criteo_dlrm-best.toml" in artifacts and "summary.json" in artifacts
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = {int(c.data.tags[TRIAL_TAG]): c for c in children
              if c.data.tags[ROLE_TAG] == "trial"}
    assert sorted(trials) == [0, 1, 2]
    assert {r["trial"]: r["run_id"] for r in result["summary"]} == {
        n: c.info.run_id for n, c in trials.items()}
    for row in result["summary"]:
        child = trials[row["trial"]]
        assert child.data.tags["plexrec.tune.state"] == row["state"]
        assert float(child.data.params["optim.embedding_lr"]) == pytest.approx(
            row["params"]["optim.embedding_lr"])
    finals = [c for c in children if c.data.tags[ROLE_TAG] == "final"]
    assert [c.info.run_id for c in finals] == [result["final_run_id"]]

    best = Path(result["best_config"])
    assert best.parent == tune_dir
    cfg = load_config(best)
    assert cfg.optim.embedding_lr == result["best_params"]["optim.embedding_lr"]
    assert cfg.layout["dim"] == result["best_params"]["layout.dim"]
    assert cfg.train.max_steps == MAX_STEPS and cfg.data.path == str(data[0])
    assert 0.0 < result["test_auc"] < 1.0
    assert Path(result["final_run_dir"]) == tune_dir / "final"


@pytest.mark.slow
def test_a_continued_study_grows_and_the_median_pruner_stops_a_weak_trial(
        data: tuple[Path, Path], tmp_path: Path) -> None:
    first = run_tune(_options(data, tmp_path, SPACE, 1, "grow", "mlflow.enabled=false"))
    assert [r["state"] for r in first["summary"]] == ["COMPLETE"]
    storage = first["storage"]
    study = optuna.load_study(study_name="grow", storage=storage)
    done = study.trials[0]
    # A finished trial far ahead at every validation step: the next real trial falls below
    # the median of the two at its first validation and is pruned there.
    study.add_trial(optuna.trial.create_trial(
        params=done.params, distributions=done.distributions, value=0.99,
        intermediate_values={s: 0.99 for s in range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY)}))

    again = run_tune(_options(data, tmp_path, SPACE, 3, "grow", "mlflow.enabled=false"))
    trials = optuna.load_study(study_name="grow", storage=storage).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert trials[0].params == done.params and trials[0].value == done.value
    assert trials[2].state == optuna.trial.TrialState.PRUNED
    assert trials[2].user_attrs["steps"] < MAX_STEPS
    assert [r["state"] for r in again["summary"]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert again["best_trial"] == 1 and again["pruned"] == 1

    # --resume without a name: the newest tune; nothing left to run, the final run is reused.
    latest = _options(data, tmp_path, SPACE, 3, "grow", "mlflow.enabled=false")
    latest.name, latest.resume = None, True
    final_result = Path(again["final_run_dir"]) / "result.json"
    written = final_result.stat().st_mtime_ns
    same = run_tune(latest)
    assert same["study"] == "grow" and same["trials"] == 3
    assert same["test_auc"] == again["test_auc"]
    assert final_result.stat().st_mtime_ns == written

    with pytest.raises(ConfigError, match="another config or space"):
        run_tune(_options(data, tmp_path, SPACE.replace("0.5", "0.4"), 3, "grow",
                          "mlflow.enabled=false"))


def test_a_trial_whose_values_do_not_fit_the_data_fails_with_its_message(
        data: tuple[Path, Path], tmp_path: Path) -> None:
    space = '[params."data.batch_size"]\nkind = "categorical"\nchoices = [100000]\n'
    with pytest.raises(PlexrecError, match="no trial completed.*batch_size"):
        run_tune(_options(data, tmp_path, space, 1, "toobig", "mlflow.enabled=false"))
    db = tmp_path / "runs" / "criteo" / "tune-toobig" / "optuna.db"
    (trial,) = optuna.load_study(study_name="toobig", storage=f"sqlite:///{db}").trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "batch_size 100000" in trial.user_attrs["error"]


def test_the_hook_stops_training_and_the_result_says_pruned(
        data: tuple[Path, Path], tmp_path: Path) -> None:
    seen: list[tuple[int, dict[str, float]]] = []

    def stop_at_second(step: int, metrics: dict[str, float]) -> bool:
        seen.append((step, metrics))
        return len(seen) == 2

    result = run_train(LaunchOptions(
        config=CONFIGS / "criteo_dlrm.toml", data=str(data[0]), quiet=True,
        overrides=[f"data.cache_dir={data[1]}", f"train.run_dir={tmp_path / 'run'}",
                   "mlflow.enabled=false", "data.batch_size=64", f"train.max_steps={MAX_STEPS}",
                   f"train.eval_every={EVAL_EVERY}", "train.first_order_epochs=0"],
        on_eval=stop_at_second))
    assert [step for step, _ in seen] == [EVAL_EVERY, 2 * EVAL_EVERY]
    assert "auc" in seen[0][1]
    assert result["pruned"] is True and result["steps"] == 2 * EVAL_EVERY < MAX_STEPS
    assert 0.0 < result["test_auc"] < 1.0

    with pytest.raises(ConfigError, match="needs --nproc 1"):
        run_train(LaunchOptions(config=CONFIGS / "criteo_dlrm.toml", nproc=2,
                                on_eval=stop_at_second))


@pytest.mark.parametrize(("text", "expected"), [
    ('[params."optim.embeding_lr"]\nkind = "float"\nlow = 0.1\nhigh = 0.2\n',
     r'\[params\."optim\.embeding_lr"\].*unknown key \'embeding_lr\''),
    ('[params."optim.embedding_lr"]\nkind = "floaty"\nlow = 0.1\nhigh = 0.2\n',
     r"\[params\.optim\.embedding_lr\] kind = 'floaty'"),
    ('[params."optim.embedding_lr"]\nkind = "float"\nlow = 0.5\nhigh = 0.01\n',
     r"\[params\] optim\.embedding_lr: low \(0\.5\) must be below high \(0\.01\)"),
    ('[params."optim.dense_lr"]\nkind = "float"\nlow = 0.0\nhigh = 0.1\nlog = true\n',
     r"optim\.dense_lr: log = true needs low > 0"),
    ('[params."model.dropout"]\nkind = "categorical"\nchoices = [0.1, 1.5]\n',
     r'\[params\."model\.dropout"\] value 1\.5.*\[model\] dropout: must be in \[0, 1\)'),
    ('[params."layout.dimm"]\nkind = "categorical"\nchoices = [8]\n',
     r'\[params\."layout\.dimm"\].*dimm'),
    ('[params."mlflow.experiment"]\nkind = "categorical"\nchoices = ["x"]\n',
     r'\[params\."mlflow\.experiment"\]: tune sets this key'),
    ('[params."model.dropout"]\nkind = "categorical"\nchoices = []\n',
     r"model\.dropout: kind = \"categorical\" needs a non-empty `choices`"),
    ("[params]\n", r"\[params\] is empty"),
])
def test_space_errors_name_the_file_the_key_and_the_value(tmp_path: Path, text: str,
                                                          expected: str) -> None:
    path = tmp_path / "bad_space.toml"
    path.write_text(text)
    base = LaunchOptions(config=CONFIGS / "criteo_dlrm.toml")
    with pytest.raises(ConfigError, match=expected) as err:
        check_keys(load_space(path), path, base)
    assert str(path) in str(err.value)


def test_the_shipped_space_applies_to_the_shipped_config() -> None:
    path = CONFIGS / "criteo_dlrm_space.toml"
    space = load_space(path)
    assert set(space.params) == {"optim.embedding_lr", "optim.dense_lr", "model.dropout",
                                 "optim.embedding_l2", "layout.dim", "model.first_order",
                                 "optim.first_order_lr"}
    assert space.params["model.first_order"].choices == [True, False]
    assert space.params["optim.embedding_lr"].log and space.params["optim.dense_lr"].log
    assert space.params["layout.dim"].choices == [8, 16, 32]
    check_keys(space, path, LaunchOptions(config=CONFIGS / "criteo_dlrm.toml"))


def test_a_nproc_above_one_with_pruning_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SPACE)
    with pytest.raises(ConfigError, match=r"prune = true needs --nproc 1"):
        run_tune(TuneOptions(config=CONFIGS / "criteo_dlrm.toml", space=tmp_path / "s.toml",
                             trials=2, nproc=2))


def test_config_toml_text_reads_back_as_the_same_table() -> None:
    raw = load_toml(CONFIGS / "criteo_dlrm.toml")
    raw["layout"]["unified"] = {"probes": 2, "odd key": [1.5, 1e-05]}
    raw["retrieval"] = {"name": "a \"quoted\" value", "flag": True}
    assert load_toml_text(toml_text(raw, "# header\n")) == raw


def load_toml_text(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
