"""The one benchmark entry point: every stage at several sizes, references, targets, skew.

    .venv/bin/pip install -e '.[bench]'                      # duckdb, polars, implicit, deltalake
    .venv/bin/python benchmarks/run_all.py --quick           # smoke run, a few minutes
    .venv/bin/python benchmarks/run_all.py --sizes 1e6       # one size, references checked
    .venv/bin/python benchmarks/run_all.py --skew            # 1M, 10M, 30M and the skew benchmark
    .venv/bin/python benchmarks/run_all.py --table benchmarks/results/X.json   # README tables only

For each size: seeded Taobao-shaped events from the project's generator (``input.source =
generator``; ~100 events per user, an item per 20 events, 1,000 Zipf-sized categories, 9 days)
go through the pipeline's stages on ``local[*]`` (ingest, features, weights, train), each run
once as a warm-up and then ``--reps`` times measured; the medians are reported. Then, on the
same tables: a breakdown of the information-gain step, the single-node references of
``references.py`` (DuckDB, Polars and pandas features, DuckDB and Polars IG counts, a pandas + scikit-learn
weighting, ``implicit``'s ALS next to Spark's), and at the smallest size the equality checks
of the references against the project. ``--skew`` adds the skew benchmark (``skew.py``).

Results go to ``benchmarks/results/<date>-<host>.json`` (``-quick`` for ``--quick``) and, with
``--readme``, into the results section of ``benchmarks/README.md``. Equality failures are
recorded in the JSON and make the exit code 1 (after everything is saved).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import references as R  # noqa: E402
import skew as K  # noqa: E402
from harness import RESULTS, machine_info  # noqa: E402
from measure import SparkStageMetrics, free_port, load_info, measured, repeat  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sampleimp_spark import lake  # noqa: E402
from sampleimp_spark import schema as S  # noqa: E402
from sampleimp_spark.config import DEFAULT_DR_FEATURES, Config, SparkConfig, load_config  # noqa: E402
from sampleimp_spark.features.behavior import feature_columns, shared_feature_groups  # noqa: E402
from sampleimp_spark.frames import checkpoint, release  # noqa: E402
from sampleimp_spark.session import get_session  # noqa: E402
from sampleimp_spark.sources import SOURCE_TIMEZONES  # noqa: E402
from sampleimp_spark.stages.pipeline import STAGES, run_stages  # noqa: E402
from sampleimp_spark.stages.weights import density_ratio_settings, label_column  # noqa: E402
from sampleimp_spark.windows import Windows, resolve_windows  # noqa: E402

DATA = HERE / "data"
README = HERE / "README.md"
QUICK_SIZES = (50_000, 100_000)
SKEW_SHARES = (0.01, 0.10, 0.50)
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
SOURCE = "generator"
log = logging.getLogger("bench")


def say(msg: str) -> None:
    """Progress on stdout, with the time."""
    print(f"{datetime.now():%H:%M:%S} {msg}", flush=True)


# --- configuration ---------------------------------------------------------------------------


def scratch_lakehouse(n: int, name: str, layers: tuple[str, ...] = ("bronze",)) -> Path:
    """A fresh copy of ``layers`` of the lakehouse ``run_all.py --keep-data`` left at size ``n``
    (``benchmarks/data/<name>_<n>``), for scripts that measure one stage on it."""
    source = DATA / f"run_{n}"
    if not (Path(lake.table_path(source, S.BRONZE_EVENTS)) / "_delta_log").is_dir():
        raise SystemExit(f"no {source}: run benchmarks/run_all.py --sizes {n} --keep-data first")
    lakehouse = DATA / f"{name}_{n}"
    shutil.rmtree(lakehouse, ignore_errors=True)
    for layer in layers:
        shutil.copytree(source / layer, lakehouse / layer)
    return lakehouse


def kept_lakehouse_parser(doc: str | None, *, reps: int, reps_help: str) -> argparse.ArgumentParser:
    """The options every script measuring on a kept lakehouse takes: ``--events`` (which one),
    ``--reps``, ``--driver-memory`` (for :func:`kept_gold`) and ``--tag`` (results file suffix)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=float, default=1e6, help="which kept lakehouse: benchmarks/data/run_<events>")
    p.add_argument("--reps", type=int, default=reps, help=reps_help)
    p.add_argument("--driver-memory", default="12g")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    return p


def kept_gold(
    events: float, driver_memory: str, table: str = S.GOLD_TRAINING_SAMPLES
) -> tuple[SparkSession, DataFrame]:
    """A session (16 shuffle partitions) and ``table`` (default ``gold.training_samples``) of the
    lakehouse kept at ``events``."""
    lakehouse = DATA / f"run_{int(events)}"
    if not Path(lake.table_path(lakehouse, table)).exists():
        raise SystemExit(f"no kept lakehouse at {lakehouse}: run run_all.py --keep-data at that size first")
    conf = {"spark.driver.memory": driver_memory}
    spark = get_session(SparkConfig(shuffle_partitions=16, log_level="ERROR", conf=conf))
    return spark, lake.read_table(spark, lakehouse, table)


def kept_samples(events: float, driver_memory: str) -> DataFrame:
    """The latest window's ``silver.samples`` of the lakehouse kept at ``events`` (see :func:`kept_gold`)."""
    _, samples = kept_gold(events, driver_memory, table=S.SILVER_SAMPLES)
    return samples.where(F.col(S.WINDOW_ID) == samples.agg(F.max(S.WINDOW_ID)).first()[0])


def make_config(n: int, args: argparse.Namespace, lakehouse: Path, ui_port: int) -> Config:
    """The pipeline config of one size: the generator at ``n`` events, benchmark Spark settings."""
    spark_conf = {
        "spark.driver.memory": args.driver_memory,
        "spark.ui.enabled": "true",
        "spark.ui.port": str(ui_port),
        "spark.ui.retainedStages": "20000",
        "spark.ui.retainedJobs": "20000",
        "spark.sql.ui.retainedExecutions": "200",
        **dict(kv.split("=", 1) for kv in args.spark_conf),
    }
    sets = [
        f"lakehouse={lakehouse}",
        f"run.runs_dir={DATA / 'runs'}",
        "input.source=generator",
        f"input.generator.events={n}",
        f"input.generator.users={max(1_000, n // 100)}",
        f"input.generator.items={max(10_000, n // 20)}",
        "input.generator.categories=1000",
        "input.generator.bad_row_rate=0.0005",
        f"spark.shuffle_partitions={args.partitions}",
        "spark.log_level=ERROR",
        f"spark.conf={json.dumps(spark_conf)}",
    ]
    # The pandas reference weights the latest window alone (no next window to target): its density
    # ratio targets the window's last day, without the shard marginal; every run times that setting.
    sets += [
        "weights.dr_target=recent",
        "weights.density_ratio.shard_smoothing=null",
        "weights.class_balance.scope=shard",  # the reference's per-shard "balanced"
    ]
    if not args.train_full:
        # The experiment's cost is linear in variants × seeds × grid sizes: measure one of each.
        sets += [
            "train.variants=[unweighted, combined]",
            "train.seeds=[1]",
            "train.als_reg_grid=[0.1]",
            "train.gbt_depth_grid=[5]",
            "train.save_models=false",
        ]
    return load_config(None, sets)


def noop(df: DataFrame) -> None:
    """Compute ``df`` completely and throw the rows away (Spark's ``noop`` sink)."""
    df.write.format("noop").mode("overwrite").save()


def package_versions() -> dict[str, str | None]:
    """Versions of the libraries the benchmark compares."""
    out: dict[str, str | None] = {}
    for name in (
        "pyspark",
        "delta-spark",
        "duckdb",
        "polars",
        "implicit",
        "pandas",
        "numpy",
        "scikit-learn",
        "deltalake",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# --- the benchmark ---------------------------------------------------------------------------


# Peak RSS of this process per input event while each in-process reference ran, measured at 10M
# events (results/2026-11-22-vm-10m.json, pandas features: -pandas-features.json), with 25 % added.
REF_PEAK_BYTES_PER_EVENT = {
    name: 1.25 * mib * 2**20 / 10_000_000
    for name, mib in {
        "polars_features": 4652,
        "pandas_features": 21053,
        "polars_ig_counts": 5854,
    }.items()
}  # DuckDB needs no guard: it spills past its memory limit (references._duckdb_connect)


class Bench:
    """One Spark session and the measurements of one invocation."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ui_port = free_port()
        # In every run id: a kept lakehouse (--keep-data) already holds the commits of an earlier
        # invocation, and a write whose run id it has seen is skipped as a retry (the pipeline's
        # idempotency), which would leave the write out of the measured time.
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        first = make_config(args.sizes[0] if args.sizes else QUICK_SIZES[0], args, DATA / "tmp", self.ui_port)
        self.spark = get_session(first.spark)
        self.metrics = SparkStageMetrics(self.spark)
        self.failures: list[str] = []
        self.on_progress: Any = lambda: None  # main() sets it to save the partial result

    # -- helpers --

    def rep(self, name: str, fn: Any, *, spark_side: bool = True) -> dict[str, Any]:
        return repeat(
            name,
            fn,
            reps=self.args.reps,
            warmup=not self.args.no_warmup,
            spark=self.spark if spark_side else None,
            metrics=self.metrics if spark_side else None,
            log=say,
        )

    @contextmanager
    def guard(self, out: dict[str, Any], name: str) -> Iterator[None]:
        """Record an error of an optional part (``out["errors"]``) instead of losing the whole size."""
        try:
            yield
        except Exception as exc:  # the stages' figures are kept; the exit code says something failed
            traceback.print_exc()
            out.setdefault("errors", {})[name] = repr(exc)
            self.failures.append(name)

    def check(self, name: str, result: dict[str, Any]) -> dict[str, Any]:
        if not result.get("equal"):
            self.failures.append(name)
            say(f"  CHECK FAILED {name}: {result}")
        else:
            say(f"  check ok {name}: {result.get('rows', '')} rows")
        return result

    def samples_pdf(self, cfg: Config, wid: str, columns: list[str] | None = None) -> Any:
        from deltalake import DeltaTable

        t = DeltaTable(lake.table_path(cfg.lakehouse, S.SILVER_SAMPLES))
        return t.to_pandas(columns=columns, filters=[("window_id", "=", wid), ("source", "=", SOURCE)])

    # -- one size --

    def size(self, n: int, out: dict[str, Any], *, check: bool) -> None:
        """Measure one size into ``out`` (already part of the saved result: ``on_progress`` saves
        what is done so far, so a size that dies half-way keeps its stage figures)."""
        args = self.args
        lakehouse = DATA / f"run_{n}"
        if lakehouse.exists() and not args.keep_data:
            shutil.rmtree(lakehouse)
        cfg = make_config(n, args, lakehouse, self.ui_port)
        self.spark.conf.set("spark.sql.shuffle.partitions", str(args.partitions))
        out.update(
            {
                "generator_events": n,
                "protocol": {"warmup": not args.no_warmup, "reps": args.reps, "breakdown": not args.no_breakdown},
                "load_start": load_info(),
                "stages": {},
            }
        )
        reports: dict[str, Any] = {}

        def stage_fn(stage: str):
            def run(rep: int) -> dict[str, Any]:
                result = run_stages(self.spark, cfg, [stage], run_id=f"bench-{n}-{stage}-{self.stamp}-{rep + 1}")
                reports[stage] = result.reports[stage]
                return stage_info(stage, result.reports[stage])

            return run

        todo = [s for s in STAGES if s in args.stages]
        if "ingest" not in todo and not lake.is_delta_table(self.spark, lake.table_path(lakehouse, S.BRONZE_EVENTS)):
            say(f"{n:,}: ingest (set-up, not measured)")
            stage_fn("ingest")(0)
        for stage in todo:
            say(f"{n:,}: stage {stage}")
            out["stages"][stage] = self.rep(stage, stage_fn(stage))
            self.on_progress()
        events = lake.read_table(self.spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == SOURCE)
        out["events"] = events.count()
        for res in out["stages"].values():
            res["events_per_second"] = round(out["events"] / res["seconds"]) if res["seconds"] else None
        windows = self.windows(cfg, events, reports.get("features"))
        out["window_id"] = windows.window_id
        out["samples"] = self.samples_pdf(cfg, windows.window_id, ["user_id"]).shape[0]
        self.on_progress()
        ig_state = None
        if args.no_breakdown:
            say(f"{n:,}: IG breakdown and weights parts skipped (--no-breakdown)")
        else:
            with self.guard(out, "ig_breakdown"):
                out["ig"], ig_state = self.ig_breakdown(cfg, windows.window_id, check=check)
            with self.guard(out, "weights_parts"):
                out["weights_parts"] = self.weights_parts(cfg, windows.window_id)
            self.on_progress()
        if not args.skip_references:
            with self.guard(out, "references"):
                out["references"] = self.references(cfg, windows, ig_state, out["events"], check=check)
                out["checks"] = out["references"].pop("checks")
        out["ratios"] = ratios(out)
        out["load_end"] = load_info()

    def windows(self, cfg: Config, events: DataFrame, features_report: Any) -> Windows:
        if features_report is not None:
            return features_report.latest.windows
        f = cfg.features
        return resolve_windows(
            events,
            t0=f.t0,
            t1=f.t1,
            t2=f.t2,
            label_days=f.label_days,
            feature_days=f.feature_days,
            tz=SOURCE_TIMEZONES[SOURCE],
        )

    # -- information gain: the whole fit vs its native aggregations --

    def ig_breakdown(self, cfg: Config, wid: str, *, check: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """Time the IG fit (edges, counts, per-shard pandas UDF), its part without the per-shard
        IG UDF (the edges — a pandas UDF over the bounded edge sample — and the counts) and the
        counts alone (edges cached), as the weights stage runs them."""
        from sampleimp_spark.weighting import information_gain as IG

        samples = lake.read_table(self.spark, cfg.lakehouse, S.SILVER_SAMPLES).where(
            (F.col(S.WINDOW_ID) == wid) & (F.col(S.SOURCE) == SOURCE)
        )
        feats = feature_columns(samples)
        groups = shared_feature_groups(feats)  # as the weights stage counts them
        icfg = cfg.weights.information_gain
        label = label_column(cfg.weights)

        ig_kw = {"n_bins": icfg.n_bins, "smoothing": icfg.smoothing, "miller_madow": icfg.miller_madow}

        def counts_of(ig: Any) -> DataFrame:
            # The contingency counts alone: information_gain has no public entry point for them.
            return IG._counts(
                samples, ig.features, ig.edges_long, shard_col=S.SHARD, label_col=label, n_bins=ig.n_bins, groups=groups
            ).drop("fold")  # every sample in one fold: the counts of the whole window

        def fit(rep: int) -> None:
            ig = IG.information_gain(samples, feats, **ig_kw, label_col=label, groups=groups)
            noop(ig.bin_scores)
            ig.unpersist()

        def native(rep: int) -> None:
            ig = IG.information_gain(samples, feats, **ig_kw, label_col=label, groups=groups)
            noop(ig.edges_long)
            noop(counts_of(ig))
            ig.unpersist()

        say("  information gain: fit, native part, counts")
        out = {"fit": self.rep("ig_fit", fit), "native": self.rep("ig_native", native)}
        ig = IG.information_gain(samples, feats, **ig_kw, label_col=label, groups=groups)
        noop(ig.edges_long)
        counts = counts_of(ig)
        out["counts"] = self.rep("ig_counts", lambda rep: noop(counts))
        state = {
            "features": feats,
            "n_bins": icfg.n_bins,
            "label": label,
            "edges": ig.edges.toPandas(),
            "spark_counts": counts.toPandas() if check else None,
        }
        ig.unpersist()
        return out, state

    def weights_parts(self, cfg: Config, wid: str) -> dict[str, Any]:
        """Two more parts of the weights stage, to see where its time goes: the IG fit with the
        pointwise scoring, and the per-shard density-ratio fits."""
        from sampleimp_spark.weighting import information_gain as IG
        from sampleimp_spark.weighting.density_ratio import fit_density_ratio

        samples = lake.read_table(self.spark, cfg.lakehouse, S.SILVER_SAMPLES).where(
            (F.col(S.WINDOW_ID) == wid) & (F.col(S.SOURCE) == SOURCE)
        )
        feats = feature_columns(samples)
        groups = shared_feature_groups(feats)  # as the weights stage counts them
        icfg = cfg.weights.information_gain
        label = label_column(cfg.weights)
        wcfg = cfg.weights
        dr_feats = list(wcfg.dr_features or [f for f in DEFAULT_DR_FEATURES if f in feats])
        targeted = samples.withColumn(S.IS_TARGET, F.col("pair_recency_any") < F.lit(wcfg.target_days))

        settings = density_ratio_settings(wcfg)

        def fit_and_score(rep: int) -> None:
            fitted = IG.information_gain(
                samples,
                feats,
                n_bins=icfg.n_bins,
                smoothing=icfg.smoothing,
                miller_madow=icfg.miller_madow,
                label_col=label,
                groups=groups,
            )
            noop(IG.with_ig_weight(samples, fitted, feats, lam=icfg.lam))
            fitted.unpersist()

        def dr_fit(rep: int) -> None:
            noop(fit_density_ratio(targeted, dr_feats, settings=settings))

        say("  weights parts: IG fit + scoring, density-ratio fits")
        return {"ig_fit_and_score": self.rep("ig_fit_and_score", fit_and_score), "dr_fit": self.rep("dr_fit", dr_fit)}

    # -- references --

    def fits(self, name: str, events: int) -> dict[str, Any] | None:
        """``{"skipped": why}`` when the in-process reference ``name`` would not fit in the memory
        available now (its peak per event as measured at 10M, see :data:`REF_PEAK_BYTES_PER_EVENT`;
        an out-of-memory kill would take this process, with the size's figures, with it)."""
        if name not in REF_PEAK_BYTES_PER_EVENT:
            return None
        need_gib = events * REF_PEAK_BYTES_PER_EVENT[name] / 2**30
        avail = float(load_info()["mem_available_gib"])  # type: ignore[arg-type]
        if need_gib <= 0.8 * avail:
            return None
        say(f"  {name} skipped: needs ~{need_gib:.1f} GiB, {avail} GiB available")
        return {"skipped": f"needs ~{need_gib:.1f} GiB of {avail} GiB available"}

    def references(
        self, cfg: Config, windows: Windows, ig: dict[str, Any] | None, n_events: int, *, check: bool
    ) -> dict[str, Any]:
        args = self.args
        wid = windows.window_id
        work = DATA / "refs"
        work.mkdir(parents=True, exist_ok=True)
        win = R.Window(
            windows.t0,
            windows.t1,
            windows.t2,
            tz=SOURCE_TIMEZONES[SOURCE],
            source=SOURCE,
            session_gap_minutes=cfg.features.session_gap_minutes,
        )
        ev_files = R.delta_files(lake.table_path(cfg.lakehouse, S.BRONZE_EVENTS))
        sm_files = R.delta_files(lake.table_path(cfg.lakehouse, S.SILVER_SAMPLES))
        out: dict[str, Any] = {"checks": {}}

        say("  references: behavior features (DuckDB, Polars, pandas)")
        duck_out, pol_out = work / "duckdb_features.parquet", work / "polars_features.parquet"
        pd_out = work / "pandas_features.parquet"
        for name, fn, path in (
            ("duckdb_features", R.duckdb_features, duck_out),
            ("polars_features", R.polars_features, pol_out),
            ("pandas_features", R.pandas_features, pd_out),
        ):
            out[name] = self.fits(name, n_events) or self.rep(
                name, lambda rep, fn=fn, path=path: {"samples": fn(ev_files, win, path)}, spark_side=False
            )
        if check:
            import pandas as pd

            cols = [*R.KEYS, *R.LABELS, *R.FEATURE_SUBSET]
            ours = self.samples_pdf(cfg, wid, cols)
            for name, path in (
                ("duckdb_features", duck_out),
                ("polars_features", pol_out),
                ("pandas_features", pd_out),
            ):
                if "skipped" in out[name]:
                    continue
                theirs = pd.read_parquet(path)
                out["checks"][name] = self.check(
                    name,
                    R.compare_frames(
                        ours, theirs, keys=["user_id", "item_id"], columns=["category_id", *R.LABELS, *R.FEATURE_SUBSET]
                    ),
                )

        if ig is not None:
            say("  references: IG contingency counts given the project's edges (DuckDB, Polars)")
            kw = {"n_bins": ig["n_bins"], "window_id": wid, "label": ig["label"]}
            res: dict[str, Any] = {}
            for name, fn in (("duckdb_ig_counts", R.duckdb_ig_counts), ("polars_ig_counts", R.polars_ig_counts)):

                def run(rep: int, fn: Any = fn, name: str = name) -> dict[str, Any]:
                    res[name] = fn(sm_files, ig["features"], ig["edges"], **kw)
                    return {"rows": len(res[name])}

                out[name] = self.fits(name, n_events) or self.rep(name, run, spark_side=False)
                if check and name in res:
                    out["checks"][name] = self.check(name, R.compare_counts(ig["spark_counts"], res[name]))

            with self.guard(out, "pandas_weights"):
                out.update(self.plain_weights(cfg, windows, ig, check=check, work=work, checks=out["checks"]))
        if not args.skip_als:
            with self.guard(out, "als"):
                out.update(self.als(cfg, windows, win, ev_files, check=check, checks=out["checks"]))
        if args.keep_data is False:
            shutil.rmtree(work, ignore_errors=True)
        return out

    def plain_weights(
        self, cfg: Config, windows: Windows, ig: dict[str, Any], *, check: bool, work: Path, checks: dict[str, Any]
    ) -> dict[str, Any]:
        """The pandas + scikit-learn weighting: timed end to end (read, weight, write), then checked."""
        wcfg = cfg.weights
        dcfg = wcfg.density_ratio
        pcfg = R.PlainWeightsConfig(
            n_bins=wcfg.information_gain.n_bins,
            smoothing=wcfg.information_gain.smoothing,
            lam=wcfg.information_gain.lam,
            target_days=wcfg.target_days,
            max_fit_rows=dcfg.max_fit_rows,
            target_share=dcfg.target_share,
            min_rows=dcfg.min_rows,
            cv_folds=dcfg.cv_folds,
            min_auc=dcfg.min_auc,
            logistic_c=dcfg.logistic_c,
            z_clip=dcfg.z_clip,
            max_ratio=dcfg.max_ratio,
            clip_quantile=wcfg.combine.clip_quantile,
            seed=dcfg.seed,
        )
        feats = ig["features"]
        dr_feats = list(wcfg.dr_features or [f for f in DEFAULT_DR_FEATURES if f in feats])
        wid = windows.window_id
        cols = ["user_id", "item_id", "shard", ig["label"], *feats]
        # pandas holds the samples (8 bytes a feature) plus a few working copies of a shard.
        need_gib = self.samples_rows(cfg, wid) * (len(feats) + 8) * 8 * 2.5 / 2**30
        avail = load_info()["mem_available_gib"]
        if need_gib > 0.8 * float(avail):  # type: ignore[arg-type]
            say(f"  pandas weighting skipped: needs ~{need_gib:.1f} GiB, {avail} GiB available")
            return {"pandas_weights": {"skipped": f"needs ~{need_gib:.1f} GiB of {avail} GiB available"}}
        say("  references: the whole weighting in pandas + scikit-learn")
        path = work / "pandas_weights.parquet"

        def run(rep: int) -> dict[str, Any]:
            samples = self.samples_pdf(cfg, wid, cols)
            weights, _ = R.plain_weights(samples, feats, dr_feats, cfg=pcfg, label=ig["label"], collect=False)
            weights.to_parquet(path)
            return {"rows": len(weights)}

        out: dict[str, Any] = {"pandas_weights": self.rep("pandas_weights", run, spark_side=False)}
        if check:
            checks.update(self.check_weights(cfg, windows, ig, pcfg, feats, dr_feats))
        return out

    def samples_rows(self, cfg: Config, wid: str) -> int:
        return int(
            lake.read_table(self.spark, cfg.lakehouse, S.SILVER_SAMPLES)
            .where((F.col(S.WINDOW_ID) == wid) & (F.col(S.SOURCE) == SOURCE))
            .count()
        )

    def check_weights(
        self,
        cfg: Config,
        windows: Windows,
        ig: dict[str, Any],
        pcfg: R.PlainWeightsConfig,
        feats: list[str],
        dr_feats: list[str],
    ) -> dict[str, Any]:
        """The plain weighting against ``gold``: with the project's edges and density-ratio fit sample
        every component must agree (w_class, IG, counts, w_ig, w_dr); the final weight where the
        clip quantile is exact (shards under 10,000 rows); own quantile edges where the project's
        are exact (shards of at most 10,000 rows)."""
        import numpy as np
        import pandas as pd
        from deltalake import DeltaTable

        from sampleimp_spark.weighting.density_ratio import fit_input
        from sampleimp_spark.weighting.information_gain import EDGE_SAMPLE_ROWS

        wid = windows.window_id
        samples_pdf = self.samples_pdf(cfg, wid, ["user_id", "item_id", "shard", ig["label"], *feats])
        sdf = (
            lake.read_table(self.spark, cfg.lakehouse, S.SILVER_SAMPLES)
            .where((F.col(S.WINDOW_ID) == wid) & (F.col(S.SOURCE) == SOURCE))
            .withColumn(S.IS_TARGET, F.col("pair_recency_any") < F.lit(cfg.weights.target_days))
        )
        dr_sample = (
            fit_input(sdf, dr_feats, settings=density_ratio_settings(cfg.weights))
            .where(F.col("_dr_side") >= 0)
            .toPandas()
        )
        weights, details = R.plain_weights(
            samples_pdf, feats, dr_feats, cfg=pcfg, edges=ig["edges"], dr_sample=dr_sample, label=ig["label"]
        )
        gold = DeltaTable(lake.table_path(cfg.lakehouse, S.GOLD_TRAINING_SAMPLES)).to_pandas(
            columns=["user_id", "item_id", "shard", "w_class", "w_dr", "w_ig", "ig_score", "w_raw", "weight"],
            filters=[("window_id", "=", wid), ("source", "=", SOURCE)],
        )
        keys = ["user_id", "item_id"]
        out: dict[str, Any] = {}
        out["pandas_weights_components"] = self.check(
            "pandas_weights_components",
            R.compare_frames(gold, weights, keys=keys, columns=["shard", "w_class", "ig_score", "w_ig", "w_dr"]),
        )
        sizes = samples_pdf.groupby("shard").size()
        exact = set(sizes[sizes < 10_000].index)
        out["pandas_weights_final_exact_shards"] = self.check(
            "pandas_weights_final_exact_shards",
            R.compare_frames(
                gold[gold["shard"].isin(exact)], weights[weights["shard"].isin(exact)], keys=keys, columns=["weight"]
            ),
        )
        big = gold[~gold["shard"].isin(exact)].merge(weights[[*keys, "weight"]], on=keys, suffixes=("", "_ref"))
        out["pandas_weights_final_exact_shards"]["other_shards_max_rel_diff"] = (
            float(np.max(np.abs(big["weight"] / big["weight_ref"] - 1))) if len(big) else 0.0
        )
        imp = DeltaTable(lake.table_path(cfg.lakehouse, S.GOLD_FEATURE_IMPORTANCE)).to_pandas(
            columns=["shard", "feature", "ig"], filters=[("window_id", "=", wid), ("source", "=", SOURCE)]
        )
        ref_ig = pd.DataFrame(details["ig"], columns=["shard", "feature", "ig"])
        out["pandas_weights_ig"] = self.check(
            "pandas_weights_ig", R.compare_frames(imp, ref_ig, keys=["shard", "feature"], columns=["ig"])
        )
        ref_counts = pd.DataFrame(details["counts"], columns=["shard", "feature", "bin", "label", "count"])
        out["pandas_weights_ig_counts"] = self.check(
            "pandas_weights_ig_counts", R.compare_counts(ig["spark_counts"], ref_counts)
        )
        # Own quantile edges (all rows) against the project's, where those are exact (no sampling).
        small = sizes[sizes <= EDGE_SAMPLE_ROWS].index
        spark_edges = {(r.shard, r.feature): list(r.edges) for r in ig["edges"].itertuples()}
        part = samples_pdf[samples_pdf["shard"].isin(small)]
        bad = 0
        total = 0
        for shard, g in part.groupby("shard"):
            for f in feats:
                total += 1
                own = R.quantile_edges(g[f].to_numpy(dtype=float), pcfg.n_bins)
                if not np.array_equal(own, np.asarray(spark_edges.get((shard, f), []), dtype=float)):
                    bad += 1
        out["pandas_quantile_edges"] = self.check(
            "pandas_quantile_edges", {"equal": bad == 0, "rows": total, "mismatched": bad}
        )
        return out

    # -- ALS --

    def als(
        self, cfg: Config, windows: Windows, win: R.Window, ev_files: list[str], *, check: bool, checks: dict[str, Any]
    ) -> dict[str, Any]:
        """Spark's ALS (the project's ``fit_als``) and ``implicit``'s on the same unweighted ratings."""
        from sampleimp_spark.training.als import fit_als, implicit_ratings, recommend

        acfg = cfg.train.als
        events = lake.read_table(self.spark, cfg.lakehouse, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == SOURCE)
        train = events.where((F.col(S.TS) >= F.lit(windows.t0)) & (F.col(S.TS) < F.lit(windows.t1)))
        ratings = checkpoint(implicit_ratings(train, None, strengths=acfg.strengths))
        stats = ratings.agg(F.count(F.lit(1)), F.sum(S.RATING)).first()
        say(f"  ALS: Spark vs implicit (rank {acfg.rank}, {acfg.max_iter} iterations, reg {acfg.reg_param})")
        kept: dict[str, Any] = {}

        def spark_fit(rep: int) -> dict[str, Any]:
            if "model" in kept:
                kept.pop("model").unpersist()  # its indexes and factors
            kept["model"] = fit_als(
                ratings,
                seed=1,
                rank=acfg.rank,
                reg_param=acfg.reg_param,
                alpha=acfg.alpha,
                max_iter=acfg.max_iter,
                num_blocks=acfg.num_blocks,
            )
            return {"ratings": stats[0]}

        out: dict[str, Any] = {"spark_als": self.rep("spark_als", spark_fit)}
        with measured(None, None) as m:
            mat = R.ratings_matrix(ev_files, win, dict(acfg.strengths))
        out["implicit_ratings_matrix"] = {"seconds": round(m["seconds"], 2), "nnz": mat.nnz}
        fitted: dict[str, Any] = {}
        kw = {"rank": acfg.rank, "reg": acfg.reg_param, "alpha": acfg.alpha, "iterations": acfg.max_iter, "seed": 1}
        for name, use_cg in (("implicit_als", False), ("implicit_als_cg", True)):

            def run(rep: int, use_cg: bool = use_cg, name: str = name) -> dict[str, Any]:
                fitted[name], secs = R.implicit_als(mat, use_cg=use_cg, **kw)
                return {"fit_seconds": round(secs, 3)}

            out[name] = self.rep(name, run, spark_side=False)
        if check:
            same = stats[0] == mat.nnz and abs(float(stats[1]) - float(mat.matrix.sum())) <= 1e-6 * float(stats[1])
            checks["als_same_matrix"] = self.check(
                "als_same_matrix",
                {
                    "equal": bool(same),
                    "rows": int(stats[0]),
                    "spark_sum": float(stats[1]),
                    "ref_sum": float(mat.matrix.sum()),
                },
            )
            truth_rows = (
                events.where(
                    (F.col(S.TS) >= F.lit(windows.t1))
                    & (F.col(S.TS) < F.lit(windows.t2))
                    & F.col(S.BEHAVIOR).isin(*S.BEHAVIORS)
                )
                .select(S.USER_ID, S.ITEM_ID)
                .distinct()
                .join(ratings.select(S.USER_ID).distinct(), S.USER_ID)
                .toPandas()
            )
            truth = truth_rows.groupby(S.USER_ID)[S.ITEM_ID].apply(set).to_dict()
            users = self.spark.createDataFrame([(u,) for u in truth], f"{S.USER_ID} string")
            k = cfg.train.evaluation.k
            recs_pdf = recommend(kept["model"], users, k).toPandas().sort_values([S.USER_ID, "rank"])
            spark_recs = recs_pdf.groupby(S.USER_ID)[S.ITEM_ID].apply(list).to_dict()
            impl_recs = R.implicit_recommend(fitted["implicit_als"], mat, list(truth), k)
            p_spark = R.precision_at_k(spark_recs, truth, k)
            p_impl = R.precision_at_k(impl_recs, truth, k)
            rel = abs(p_spark - p_impl) / max(p_spark, p_impl, 1e-12)
            checks["als_quality_parity"] = self.check(
                "als_quality_parity",
                {
                    "equal": rel <= self.args.als_tolerance,
                    "rows": len(truth),
                    f"spark_precision_at_{k}": round(p_spark, 5),
                    f"implicit_precision_at_{k}": round(p_impl, 5),
                    "relative_difference": round(rel, 4),
                    "tolerance": self.args.als_tolerance,
                },
            )
        if "model" in kept:
            kept.pop("model").unpersist()
        release(ratings)
        return out

    # -- skew --

    def skew(self, n: int) -> dict[str, Any]:
        """The same ``n`` events with the largest category at each share of :data:`SKEW_SHARES`:
        Python-worker peak RSS and weights-stage time per share."""
        args = self.args
        base = DATA / f"skew_base_{n}"
        if base.exists() and not args.keep_data:
            shutil.rmtree(base)
        base_cfg = make_config(n, args, base, self.ui_port)
        if not lake.is_delta_table(self.spark, lake.table_path(base, S.BRONZE_EVENTS)):
            say(f"skew {n:,}: ingest (set-up, not measured)")
            run_stages(self.spark, base_cfg, ["ingest"], run_id=f"skew-{n}-ingest")
        events = lake.read_table(self.spark, base, S.BRONZE_EVENTS).where(F.col(S.SOURCE) == SOURCE)
        out: dict[str, Any] = {"events": events.count(), "shares": {}}
        for share in args.skew_shares:
            lakehouse = DATA / f"skew_{n}_{share:g}"
            if lakehouse.exists():
                shutil.rmtree(lakehouse)
            cfg = make_config(n, args, lakehouse, self.ui_port)
            skewed = K.skewed_events(events, share=share, categories=cfg.input.generator.categories)
            ctx = lake.RunContext(f"skew-{n}-{share:g}", cfg.hash(), "ingest")
            lake.write_table(skewed, lakehouse, S.BRONZE_EVENTS, ctx=ctx)
            written = lake.read_table(self.spark, lakehouse, S.BRONZE_EVENTS)
            top, measured_share = K.largest_share(written)
            say(f"skew {n:,} share {share:g}: largest category {top} holds {measured_share:.3%}; features (set-up)")
            with measured(self.spark, self.metrics) as feat:
                features = run_stages(self.spark, cfg, ["features"], run_id=f"skew-{n}-{share:g}-features")
            say(f"skew {n:,} share {share:g}: weights")

            def weights(rep: int, cfg: Config = cfg, share: float = share) -> dict[str, Any]:
                r = run_stages(self.spark, cfg, ["weights"], run_id=f"skew-{n}-{share:g}-weights-{rep + 1}")
                return stage_info("weights", r.reports["weights"])

            res = self.rep(f"weights@{share:g}", weights)
            res["largest_category_share"] = round(measured_share, 4)
            res["features_stage_seconds"] = round(feat["seconds"], 1)
            res["shards"] = features.reports["features"].latest.shards
            out["shares"][f"{share:g}"] = res
            if not args.keep_data:
                shutil.rmtree(lakehouse, ignore_errors=True)
        rss = [r["python_workers_peak_rss_mib"] for r in out["shares"].values()]
        out["python_workers_rss_max_over_min"] = round(max(rss) / min(rss), 3) if rss and min(rss) > 0 else None
        if not args.keep_data:
            shutil.rmtree(base, ignore_errors=True)
        return out


def stage_info(stage: str, report: Any) -> dict[str, Any]:
    """Row counts from a stage's report."""
    if stage == "ingest":
        return {"input_rows": report.input_rows, "events": report.events}
    if stage == "features":  # the run's own window (the training window is built before it)
        latest = report.latest
        return {"samples": latest.samples, "shards": latest.shards, "features": len(latest.features)}
    if stage == "weights":
        latest = report.windows[-1]
        return {"rows": latest.rows, "shards": latest.shards}
    if stage == "train":
        result = report.result
        tuned = result.tuned.as_dict()
        return {"metric_rows": len(result.per_origin), "comparisons": len(result.summary), "tuned": tuned}
    return {}


# --- ratios, targets, tables -----------------------------------------------------------------


def _secs(d: dict[str, Any] | None) -> float | None:
    return d.get("seconds") if isinstance(d, dict) and d.get("seconds") else None


def ratios(size: dict[str, Any]) -> dict[str, float | None]:
    """Project time / reference time (and the internal ratios the targets name)."""
    st, ig, ref = size.get("stages", {}), size.get("ig", {}), size.get("references", {})

    def r(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    features, weights = _secs(st.get("features")), _secs(st.get("weights"))
    return {
        "features_vs_duckdb": r(features, _secs(ref.get("duckdb_features"))),
        "features_vs_polars": r(features, _secs(ref.get("polars_features"))),
        "features_vs_pandas": r(features, _secs(ref.get("pandas_features"))),
        "ig_counts_vs_duckdb": r(_secs(ig.get("counts")), _secs(ref.get("duckdb_ig_counts"))),
        "ig_counts_vs_polars": r(_secs(ig.get("counts")), _secs(ref.get("polars_ig_counts"))),
        "weights_vs_pandas": r(weights, _secs(ref.get("pandas_weights"))),
        "spark_als_vs_implicit": r(_secs(ref.get("spark_als")), _secs(ref.get("implicit_als"))),
        "spark_als_vs_implicit_cg": r(_secs(ref.get("spark_als")), _secs(ref.get("implicit_als_cg"))),
        "ig_fit_vs_native": r(_secs(ig.get("fit")), _secs(ig.get("native"))),
        "weights_vs_features": r(weights, features),
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on whatever sizes were run (the issue names 10M and 30M)."""
    sizes = {int(k): v for k, v in result.get("sizes", {}).items()}
    out = []

    def add(name: str, n: int | None, value: float | None, limit: float, note: str = "") -> None:
        out.append(
            {
                "target": name,
                "size": n,
                "value": value,
                "limit": limit,
                "met": None if value is None else value <= limit,
                "note": note,
            }
        )

    for n, s in sorted(sizes.items()):
        ra = s.get("ratios", {})
        add("features ≤ 2.5 × DuckDB (same features)", n, ra.get("features_vs_duckdb"), 2.5, "issue: at 30M")
        add("features ≥ 2× faster than pandas (ratio ≤ 0.5)", n, ra.get("features_vs_pandas"), 0.5)
        add("IG fit ≤ 1.3 × its native aggregations", n, ra.get("ig_fit_vs_native"), 1.3)
        add("weights ≤ features", n, ra.get("weights_vs_features"), 1.0, "issue: at 10M and 30M")
    ordered = sorted(sizes)
    # The step is 10M → 30M; without both, the two largest sizes, the limit scaled (3.3 per 3×).
    steps = [(10_000_000, 30_000_000)] if {10_000_000, 30_000_000} <= sizes.keys() else [tuple(ordered[-2:])]
    for lo, hi in steps if len(ordered) >= 2 else []:
        limit = 3.3 * (hi / lo) / 3.0
        name = "t(30M)/t(10M) ≤ 3.3" if (lo, hi) == (10_000_000, 30_000_000) else f"t({hi:,})/t({lo:,}) ≤ {limit:.2f}"
        for stage in STAGES:
            a, b = _secs(sizes[lo]["stages"].get(stage)), _secs(sizes[hi]["stages"].get(stage))
            if a or b:
                add(f"{name}: {stage}", hi, round(b / a, 3) if a and b else None, limit)
    sk = result.get("skew")
    if sk:
        add(
            "Python-worker peak RSS, 50 % vs 1 % skew ≤ 1.5×",
            sk.get("events"),
            sk.get("python_workers_rss_max_over_min"),
            1.5,
        )
    return out


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _protocol(size: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """How a size was run (files written before sizes recorded it: warm-up + the run's reps)."""
    return size.get("protocol") or {"warmup": True, "reps": args["reps"]}


def _protocol_text(p: dict[str, Any]) -> str:
    runs = f"{p['reps']} run{'s' if p['reps'] != 1 else ''}"
    return f"warm-up + {runs}" if p["warmup"] else f"no warm-up, {runs}"


def _protocols(result: dict[str, Any]) -> str:
    """How each size was run, e.g. ``1M: warm-up + 3 runs; 10M: no warm-up, 1 run``."""
    parts = []
    for _n, s in sorted(result["sizes"].items(), key=lambda kv: int(kv[0])):
        notes = "".join(f" ({note})" for note in s.get("protocol_notes", []))
        parts.append(f"{_fmt(s['events'])}: {_protocol_text(_protocol(s, result['args']))}{notes}")
    return "; ".join(parts)


def _targets_table(found: list[dict[str, Any]], sizes: list[int]) -> list[str]:
    """One row per target, one column per measured size: ``value (met|missed)``. A target
    measured at another size (the skew benchmark's 10,001,363 events) goes in the column of a size
    within 5 % of it, else in a column of its own."""
    measured = [t for t in found if t["value"] is not None]

    def column(n: int) -> int:
        near = [m for m in sizes if abs(m - n) <= 0.05 * m]
        return min(near, key=lambda m: abs(m - n)) if near else n

    columns = sorted({*sizes, *(column(t["size"]) for t in measured)})
    rows: dict[tuple[str, str], dict[int, str]] = {}
    for t in measured:
        name = f"{t['target']} ({t['note']})" if t["note"] else t["target"]
        cell = f"{t['value']:,.3f} ({'met' if t['met'] else '**missed**'})"
        rows.setdefault((name, _fmt(t["limit"], 2)), {})[column(t["size"])] = cell
    head = "| target | limit | " + " | ".join(f"{n:,} events" for n in columns) + " |"
    lines = ["", "**Targets** (value (met or missed); – not measured at that size)", "", head]
    lines.append("|---|---:|" + "---:|" * len(columns))
    for (name, limit), cells in rows.items():
        lines.append(f"| {name} | {limit} | " + " | ".join(cells.get(n, "–") for n in columns) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The README's results section from a results JSON."""
    m = result["machine"]
    lines = [
        f"Run {result['at'][:16]} UTC on `{m['host']}`: {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Spark {m['spark']}, {m['java']}, Python {m['python']}; driver memory {result['args']['driver_memory']}, "
        f"{result['args']['partitions']} shuffle partitions, "
        f"medians of the measured runs ({_protocols(result)}). "
        f"Load average at the start {m['load_start']['loadavg_1m']} (1 min) / {m['load_start']['loadavg_5m']} (5 min) "
        f"on {m['cores']} cores, at the end {m['load_end']['loadavg_1m']} / {m['load_end']['loadavg_5m']}. "
        f"File: `{result.get('file', '')}`.",
        "",
        "**Stages**",
        "",
        "| events | stage | median s | runs (s) | events/s | driver JVM peak MiB | Python workers peak MiB "
        "| spill memory / disk MiB | shuffle read MiB |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for _n, s in sorted(result["sizes"].items(), key=lambda kv: int(kv[0])):
        rows = [(k, v) for k, v in s["stages"].items()]
        rows += [(f"IG {k}", v) for k, v in s.get("ig", {}).items()]
        for stage, v in rows:
            runs = ", ".join(f"{x:.1f}" for x in v.get("seconds_all", []))
            lines.append(
                f"| {_fmt(s['events'])} | {stage} | {_fmt(v.get('seconds'))} | {runs} "
                f"| {_fmt(v.get('events_per_second'))} "
                f"| {_fmt(v.get('jvm_peak_rss_mib'), 0)} | {_fmt(v.get('python_workers_peak_rss_mib'), 0)} "
                f"| {_fmt(v.get('spill_memory_mib'))} / {_fmt(v.get('spill_disk_mib'))} "
                f"| {_fmt(v.get('shuffle_read_mib'))} |"
            )
    lines += [
        "",
        "**References** (each from the latest file of its size that ran it, the project's figure from the latest"
        " file that measured it: the protocol notes above name the files; ratio = project / reference, below 1 ="
        " the project is faster)",
        "",
        "| events | project step | s | reference | s | ratio | reference peak RSS MiB | equal at check size |",
        "|---:|---|---:|---|---:|---:|---:|---|",
    ]
    pairs = [
        ("features stage", ("stages", "features"), "duckdb_features", "features_vs_duckdb", ["duckdb_features"]),
        ("features stage", ("stages", "features"), "polars_features", "features_vs_polars", ["polars_features"]),
        ("features stage", ("stages", "features"), "pandas_features", "features_vs_pandas", ["pandas_features"]),
        ("IG counts (edges cached)", ("ig", "counts"), "duckdb_ig_counts", "ig_counts_vs_duckdb", ["duckdb_ig_counts"]),
        ("IG counts (edges cached)", ("ig", "counts"), "polars_ig_counts", "ig_counts_vs_polars", ["polars_ig_counts"]),
        (
            "weights stage",
            ("stages", "weights"),
            "pandas_weights",
            "weights_vs_pandas",
            [
                "pandas_weights_components",
                "pandas_weights_ig",
                "pandas_weights_ig_counts",
                "pandas_weights_final_exact_shards",
                "pandas_quantile_edges",
            ],
        ),
        ("Spark ALS fit", ("references", "spark_als"), "implicit_als", "spark_als_vs_implicit", ["als_same_matrix"]),
        (
            "Spark ALS fit",
            ("references", "spark_als"),
            "implicit_als_cg",
            "spark_als_vs_implicit_cg",
            ["als_same_matrix", "als_quality_parity"],
        ),
    ]
    for _n, s in sorted(result["sizes"].items(), key=lambda kv: int(kv[0])):
        refs, checks = s.get("references"), s.get("checks", {})
        if not refs:
            continue
        for label, (sec, key), ref, ratio, check_names in pairs:
            mine = s.get(sec, {}).get(key, {})
            theirs = refs.get(ref)
            if theirs is None:  # a reference added after this file was written
                continue
            eq = [checks[c]["equal"] for c in check_names if c in checks]
            eq_s = "–" if not eq else ("yes" if all(eq) else "**no**")
            if "skipped" in theirs:
                lines.append(
                    f"| {_fmt(s['events'])} | {label} | {_fmt(_secs(mine))} | {ref} "
                    f"| skipped: {theirs['skipped']} | – | – | – |"
                )
                continue
            lines.append(
                f"| {_fmt(s['events'])} | {label} | {_fmt(_secs(mine))} | {ref} | {_fmt(_secs(theirs))} "
                f"| {_fmt(s['ratios'].get(ratio), 2)} | {_fmt(theirs.get('driver_python_peak_rss_mib'), 0)} | {eq_s} |"
            )
    lines += _targets_table(result.get("targets", []), sorted(int(n) for n in result["sizes"]))
    sk = result.get("skew")
    if sk:
        where = result.get("skew_machine")
        run = ""
        if where:
            ld, le = where["machine"]["load_start"], where["machine"]["load_end"]
            run = (
                f"; from `{where['file']}`, {where['args']['reps']} measured run(s) "
                f"{'without' if where['args'].get('no_warmup') else 'after'} a warm-up, load average "
                f"{ld['loadavg_1m']} at the start and {le['loadavg_1m']} at the end"
            )
        lines += [
            "",
            f"**Skew** ({_fmt(sk['events'])} events; weights stage, median of the measured runs{run})",
            "",
            "| largest category share (asked / measured) | shards | weights s | Python workers peak MiB "
            "| largest worker MiB | driver JVM peak MiB | spill disk MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for share, v in sk["shares"].items():
            lines.append(
                f"| {float(share):.0%} / {v['largest_category_share']:.1%} | {_fmt(v['shards'])} "
                f"| {_fmt(v['seconds'])} "
                f"| {_fmt(v['python_workers_peak_rss_mib'], 0)} | {_fmt(v['python_worker_max_rss_mib'], 0)} "
                f"| {_fmt(v['jvm_peak_rss_mib'], 0)} | {_fmt(v.get('spill_disk_mib'))} |"
            )
    if result.get("failures"):
        lines += ["", f"**Equality checks failed**: {', '.join(result['failures'])}"]
    return "\n".join(lines)


def merged(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several results files as one (e.g. the sizes of one run and the skew benchmark of another)."""
    out = dict(results[0])
    out["sizes"] = dict(out.get("sizes", {}))
    for other in results[1:]:
        for n, size in other.get("sizes", {}).items():
            if n not in out["sizes"]:
                out["sizes"][n] = size
                continue
            # The same size measured in two invocations (e.g. the train stage on its own, or a
            # stage re-measured after a change): the later file's figures win where both have
            # them (stages, IG breakdown, weights parts, each reference and its check); the
            # earlier file's others (e.g. the references a later run skipped) are kept; the
            # protocol notes name the later file and how it ran.
            mine = dict(out["sizes"][n])
            mine["protocol"] = _protocol(mine, results[0]["args"])
            parts = [*size.get("stages", {}), *(["ig"] if size.get("ig") else [])]
            if parts:
                theirs = _protocol_text(_protocol(size, other["args"]))
                note = f"{', '.join(parts)}: {theirs}, `{other.get('file', '?')}`"
                mine["protocol_notes"] = [*mine.get("protocol_notes", []), note]
            later = {k: v for k, v in size.items() if v not in (None, {}, []) and k not in ("protocol", "ratios")}
            combined = {**mine, **later}
            for key in ("stages", "references", "checks"):
                combined[key] = {**mine.get(key, {}), **size.get(key, {})}
            combined["ratios"] = ratios(combined)
            out["sizes"][n] = combined
        if other.get("skew"):
            out["skew"] = other["skew"]
            out["skew_machine"] = {
                "file": other.get("file"),
                "args": other.get("args"),
                "machine": other.get("machine"),
            }
        out["failures"] = [*out.get("failures", []), *other.get("failures", [])]
        out["file"] = f"{out.get('file', '')}, {other.get('file', '')}"
    out["targets"] = targets(out)
    return out


def write_readme(result: dict[str, Any]) -> None:
    """Replace the text between the results markers of ``benchmarks/README.md``."""
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START not in text:
        text += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    README.write_text(f"{head}{MARK_START}\n{markdown(result)}\n{MARK_END}{tail}")


def save(result: dict[str, Any], suffix: str = "") -> Path:
    """``benchmarks/results/<date>-<host><suffix>.json``, the date the run started (a run's progress
    saves go to one file, also across midnight)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = str(result.get("at") or datetime.now(UTC).isoformat())[:10]
    path = RESULTS / f"{day}-{socket.gethostname()}{suffix}.json"
    result["file"] = str(path.relative_to(HERE.parent))
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


# --- command line ----------------------------------------------------------------------------


def _setting(text: str) -> str:
    """A ``--spark-conf`` value: ``KEY=VALUE``."""
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=None, help="events per size (default 1e6 1e7 3e7)")
    p.add_argument("--reps", type=int, default=None, help="measured runs after the warm-up (default 3; 1 with --quick)")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up run (for the largest sizes)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to measure")
    p.add_argument("--skip-references", action="store_true", help="no DuckDB/Polars/pandas/implicit references")
    p.add_argument("--skip-als", action="store_true", help="no Spark ALS vs implicit (the other references run)")
    p.add_argument(
        "--no-breakdown",
        action="store_true",
        help="no IG breakdown and weights parts (and so no IG-count and pandas-weighting references)",
    )
    p.add_argument("--skew", action="store_true", help="also run the skew benchmark")
    p.add_argument("--skew-size", type=float, default=None, help="events of the skew benchmark (default 1e7)")
    p.add_argument("--skew-shares", type=float, nargs="+", default=list(SKEW_SHARES))
    p.add_argument("--skew-only", action="store_true", help="only the skew benchmark (results file suffix -skew)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, 1 rep, skew at 100k")
    p.add_argument("--check-size", type=float, default=None, help="size with equality checks (default: smallest)")
    p.add_argument("--als-tolerance", type=float, default=0.25, help="ALS precision@k parity, relative")
    p.add_argument("--train-full", action="store_true", help="the full default experiment in the train stage")
    p.add_argument("--driver-memory", default="12g")
    p.add_argument("--partitions", type=int, default=16, help="spark.sql.shuffle.partitions")
    p.add_argument("--spark-conf", nargs="+", default=[], type=_setting, metavar="KEY=VALUE", help="Spark settings")
    p.add_argument("--keep-data", action="store_true", help="keep the lakehouses under benchmarks/data/")
    p.add_argument("--readme", action="store_true", help="write the tables into benchmarks/README.md")
    p.add_argument("--tag", default="", help="results file suffix, e.g. --tag=-10m (merge files with --table)")
    p.add_argument(
        "--table",
        type=Path,
        nargs="+",
        default=None,
        help="only print (with --readme: write) the tables of JSON file(s)",
    )
    args = p.parse_args(argv)
    if args.skew_only:
        args.skew = True
    if args.quick:
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.reps = 1 if args.reps is None else args.reps
        args.skew_size = args.skew_size or 100_000
    args.sizes = sorted(int(s) for s in (args.sizes or (1e6, 1e7, 3e7)))
    args.reps = 3 if args.reps is None else args.reps
    args.skew_size = int(args.skew_size or 1e7)
    args.check_size = int(args.check_size) if args.check_size else args.sizes[0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        result = merged([json.loads(p.read_text()) for p in args.table])
        print(markdown(result))
        if args.readme:
            write_readme(result)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    DATA.mkdir(parents=True, exist_ok=True)
    machine = {**machine_info(), "load_start": load_info(), "versions": package_versions()}
    bench = Bench(args)
    machine["spark_default_parallelism"] = bench.spark.sparkContext.defaultParallelism
    say(f"machine {machine}")
    say(f"Spark UI on port {bench.ui_port} (benchmarks/sql_log.py --port {bench.ui_port} records its SQL executions)")
    result: dict[str, Any] = {
        "benchmark": "run_all",
        "at": datetime.now(UTC).isoformat(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        "sizes": {},
    }
    suffix = ("-quick" if args.quick else "") + ("-skew" if args.skew_only else "") + args.tag
    started = time.perf_counter()
    bench.on_progress = lambda: save(result, suffix)
    try:
        for n in [] if args.skew_only else args.sizes:
            say(f"=== {n:,} events")
            result["sizes"][str(n)] = {}
            bench.size(n, result["sizes"][str(n)], check=(n == args.check_size))
            save(result, suffix)  # keep what is done if a later size fails
        if args.skew:
            say(f"=== skew at {args.skew_size:,} events")
            result["skew"] = bench.skew(args.skew_size)
    finally:
        result["machine"]["load_end"] = load_info()
        result["total_seconds"] = round(time.perf_counter() - started, 1)
        result["targets"] = targets(result)
        result["failures"] = bench.failures
        path = save(result, suffix)
        say(f"saved {path}")
    print(markdown(result))
    if args.readme:
        write_readme(result)
    if bench.failures:
        say(f"equality checks failed: {bench.failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
