"""spark-submit entry point: raw input -> bronze.events + bronze.rejects.

    spark-submit [--packages io.delta:delta-spark_4.2_2.13:4.4.0 ...] jobs/ingest_events.py \
        --conf conf/local.yaml [--set key=value ...] [--run-id ID]
"""

import sys

from sampleimp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
