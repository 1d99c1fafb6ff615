"""Text features inside the features stage: silver.item_text, silver.item_embeddings, item_emb_*."""

from __future__ import annotations

import pytest
from conftest import write_text
from deltalake import DeltaTable

from sampleimp_spark import lake
from sampleimp_spark import schema as S
from sampleimp_spark.config import load_config
from sampleimp_spark.stages.pipeline import run_stages

pytestmark = pytest.mark.slow  # the sentence-embedding model

TITLES = {
    "i1": ("Cooking Light", "Mag > Food > Cooking"),
    "i2": ("Bon Appetit", "Mag > Food > Cooking"),
    "i3": ("Car and Driver", "Mag > Autos"),
    "i4": ("Road & Track", "Mag > Autos"),
}


def test_features_stage_writes_text_tables_and_embedding_features(spark, tmp_path):
    rows = ["user_id,item_id,category_id,behavior,ts,item_text,category_path"]
    for day in range(1, 8):
        for u in range(6):
            item = f"i{(u + day) % 4 + 1}"
            title, path = TITLES[item]
            rows.append(f"u{u},{item},{path.split(' > ')[1]},view,2024-03-0{day}T10:00:00Z,{title},{path}")
    path = write_text(tmp_path / "events.csv", "\n".join(rows) + "\n")
    lakehouse = str(tmp_path / "lakehouse")
    cfg = load_config(
        None,
        [
            f"lakehouse={lakehouse}",
            "input.source=canonical",
            f"input.paths=[{path}]",
            "features.label_days=1",
            "features.min_shard_rows=1",
            "features.text.embeddings_enabled=true",
            "features.text.embedding_dim=2",
            "features.text.max_fit_items=10",
            "train.enabled=false",
        ],
    )
    report = run_stages(spark, cfg, ("ingest", "features"), run_id="text-1").reports["features"]
    assert {"item_emb_0", "item_emb_1"} <= set(report.latest.features)
    tfidf = DeltaTable(lake.table_path(lakehouse, S.SILVER_ITEM_TEXT)).to_pandas()
    assert sorted(tfidf[S.ITEM_ID]) == ["i1", "i2", "i3", "i4"] and (tfidf["n_tokens"] > 0).all()
    emb = DeltaTable(lake.table_path(lakehouse, S.SILVER_ITEM_EMBEDDINGS)).to_pandas()
    assert sorted(emb[S.ITEM_ID]) == ["i1", "i2", "i3", "i4"] and len(emb["embedding"].iloc[0]) == 384
    samples = DeltaTable(lake.table_path(lakehouse, S.SILVER_SAMPLES)).to_pandas()
    merged = samples.merge(emb, on=S.ITEM_ID)
    assert (merged["item_emb_0"] == merged["emb_0"]).all() and (merged["item_emb_1"] == merged["emb_1"]).all()
