"""spark-submit entry point: bronze.events -> silver.samples, silver.shard_map, silver.class_frequencies.

    spark-submit [--packages io.delta:delta-spark_4.2_2.13:4.4.0 ...] jobs/build_features.py \
        --conf conf/local.yaml [--set key=value ...] [--run-id ID]
"""

import sys

from sampleimp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["features", *sys.argv[1:]]))
