"""spark-submit entry point: weighted vs unweighted ALS and GBT -> models, gold.metrics, gold.experiment_results.

    spark-submit [--packages io.delta:delta-spark_4.2_2.13:4.4.0 ...] jobs/train_recommender.py \
        --conf conf/local.yaml [--set key=value ...] [--run-id ID]
"""

import sys

from sampleimp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
