"""spark-submit entry point: every stage of the pipeline, in order.

spark-submit [...] jobs/pipeline.py --conf conf/local.yaml [--set key=value ...]
"""

import sys

from sampleimp_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
