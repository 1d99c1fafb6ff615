from pathlib import Path

import pytest

from sampleimp_spark.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_local_profile_is_the_embedded_default():
    assert load_config(ROOT / "conf" / "local.yaml") == Config() == load_config(None)


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  max_reject_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "ingest.max_reject_rat: unknown key" in str(err.value)


def test_bad_value_is_named_with_what_was_given():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["ingest.max_reject_rate=2"])
    msg = str(err.value)
    assert "ingest.max_reject_rate" in msg and "less than or equal to 1" in msg and "(got 2)" in msg


@pytest.mark.parametrize("bad", ["0", "-1", ".nan", ".inf"])
def test_half_life_must_be_positive_and_finite(bad):
    with pytest.raises(ConfigError, match=r"weights\.half_life_days"):
        load_config(None, [f"weights.half_life_days={bad}"])
    assert load_config(None, ["weights.half_life_days=null"]).weights.half_life_days is None


def test_wrong_type_and_bad_source_are_named():
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions"):
        load_config(None, ["spark.shuffle_partitions=many"])
    with pytest.raises(ConfigError, match=r"input\.source"):
        load_config(None, ["input.source=kafka"])


def test_paths_must_fit_the_source():
    with pytest.raises(ConfigError, match="paths must name at least one file"):
        load_config(None, ["input.source=taobao"])
    with pytest.raises(ConfigError, match="item_paths must name the meta"):
        load_config(None, ["input.source=amazon", "input.paths=[a.csv]"])


def test_times_need_an_offset_and_an_order():
    with pytest.raises(ConfigError, match="needs a UTC offset"):
        load_config(None, ["ingest.valid_from=2017-11-25T00:00:00"])
    with pytest.raises(ConfigError, match="valid_from must be before valid_until"):
        load_config(None, ["ingest.valid_from=2017-12-01T00:00:00Z", "ingest.valid_until=2017-11-01T00:00:00Z"])


def test_overrides_are_yaml_typed_and_nested():
    cfg = load_config(
        None,
        [
            "input.source=taobao",
            "input.paths=[x.csv, y.csv]",
            "ingest.max_reject_rate=0.25",
            "spark.conf={spark.driver.memory: 4g}",
        ],
    )
    assert cfg.input.paths == ["x.csv", "y.csv"]
    assert cfg.ingest.max_reject_rate == 0.25
    assert cfg.spark.conf == {"spark.driver.memory": "4g"}


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(None, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/profile.yaml")


def test_config_hash_ignores_run_id_but_not_settings():
    base = load_config(None)
    assert base.hash() == load_config(None, ["run.run_id=abc"]).hash()
    assert base.hash() == load_config(None, ["ingest.allow_empty_day=true"]).hash()  # no redo of days done
    assert base.hash() != load_config(None, ["ingest.max_reject_rate=0.5"]).hash()


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
    ],
)
def test_yaml_tags_that_construct_objects_are_refused_not_run(tmp_path, tagged):
    """A profile or an override with a Python tag is a config error (exit 2); nothing executes."""
    marker = tmp_path / "executed"
    value = tagged.format(marker=marker)
    profile = tmp_path / "hostile.yaml"
    profile.write_text(f"lakehouse: {value}\n")
    with pytest.raises(ConfigError):
        load_config(str(profile))
    with pytest.raises(ConfigError):
        load_config(None, [f"lakehouse={value}"])
    assert not marker.exists()
