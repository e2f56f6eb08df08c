"""Cold items: every item of a catalogue side table gets a vector from the item tower on its own
features, whether or not an interaction mentions it."""

import json

import numpy as np
import pytest

from plexrec.cli.main import main as plexrec
from plexrec.features.cache import PreparedData
from plexrec.features.errors import ConfigError, DataError
from plexrec.features.prepare import prepare
from plexrec.features.schema import load_schema
from plexrec.features.synth import write_interactions
from plexrec.models.snapshot import Snapshot
from plexrec.training.export import external_ids, load_trained
from plexrec.training.item_catalog import catalog_vectors
from plexrec.training.launch import LaunchOptions, run_train
from plexrec.training.two_tower import entity_rows, tower_vectors
from tests.conftest import CONFIGS

ITEMS = 300


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    write_interactions(root / "synth", 3000, seed=3, users=150, items=ITEMS, progress=False)
    prepare(load_schema(CONFIGS / "synthetic_interactions.toml"), root / "synth",
            root / "prepared", progress=False)
    result = run_train(LaunchOptions(
        config=CONFIGS / "synthetic_two_tower.toml", data=str(root / "prepared"), quiet=True,
        overrides=["mlflow.enabled=false", f"train.runs_root={root / 'runs'}",
                   "retrieval.final_fit=false", "train.max_steps=10", "data.batch_size=64",
                   "model.deep_mlp=[16]", "layout.dim=8"]))
    assert PreparedData.open(root / "prepared").num_rows == 3000
    return root, load_trained(result["run_dir"])


def test_catalogue_rows_of_seen_items_give_their_trained_vectors(run):
    root, trained = run
    ids, vectors = catalog_vectors(trained.parts, trained.data, root / "synth/catalog/items.csv")
    assert len(ids) == ITEMS and vectors.shape == (ITEMS, 16)
    items, rows = entity_rows(trained.data, "item_id")
    seen = external_ids(trained.data, "item_id", items)
    assert 0 < len(seen) < ITEMS
    from_rows = tower_vectors(trained.parts.model.item, trained.data, rows).numpy()
    position = {int(i): k for k, i in enumerate(ids)}
    from_catalog = vectors[[position[int(i)] for i in seen]]
    assert np.abs(from_catalog - from_rows).max() < 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_export_holds_every_catalogue_item(run, tmp_path, capsys):
    root, trained = run
    catalog = root / "synth/catalog/items.csv"
    code = plexrec(["export", "--checkpoint", str(trained.run_dir), "--out", str(tmp_path),
                    "--item-catalog", str(catalog)])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    snap = Snapshot.open(line["snapshot"], verify=True)
    assert line["items"] == snap.count("item") == ITEMS
    assert sorted(snap.ids("item").tolist()) == list(range(1, ITEMS + 1))
    seen = len(entity_rows(trained.data, "item_id")[0])
    assert snap.manifest["training"]["catalog_only_items"] == ITEMS - seen
    ids, vectors = catalog_vectors(trained.parts, trained.data, catalog)
    cold = ids[~np.isin(ids, external_ids(trained.data, "item_id",
                                          entity_rows(trained.data, "item_id")[0]))]
    stored = snap.vectors("item")[snap.row_of("item", cold)]
    assert np.abs(stored - vectors[np.isin(ids, cold)]).max() < 1e-6


def test_a_bad_catalogue_names_the_file_line_and_column(run, tmp_path):
    _, trained = run
    no_tags = tmp_path / "no_tags.csv"
    no_tags.write_text("item_id,item_category,item_price\n1,cat001,3.5\n")
    with pytest.raises(ConfigError, match="no column 'item_tags'"):
        catalog_vectors(trained.parts, trained.data, no_tags)
    bad_id = tmp_path / "bad_id.csv"
    bad_id.write_text("item_id,item_category,item_tags,item_price\n1,cat001,t01,3.5\n"
                      "x7,cat001,t01,3.5\n")
    with pytest.raises(DataError, match=r"bad_id.csv:3: item id 'x7' is not an integer"):
        catalog_vectors(trained.parts, trained.data, bad_id)
    twice = tmp_path / "twice.csv"
    twice.write_text("item_id,item_category,item_tags,item_price\n4,c,t,1\n4,c,t,1\n")
    with pytest.raises(DataError, match=r"twice.csv:3: item id 4 is listed twice"):
        catalog_vectors(trained.parts, trained.data, twice)
    with pytest.raises(ConfigError, match="no such file"):
        catalog_vectors(trained.parts, trained.data, tmp_path / "missing.csv")
