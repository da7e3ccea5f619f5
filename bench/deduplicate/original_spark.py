"""The original stage-2 method (cah-prepro deduplicate/cah_stats_spark.py, reference section 3), for the
benchmark only: header scan, group by column set, keep groups with `similarity`, Spark's default CSV
dialect (backslash escape), union to the fixed schema with "" for missing columns, casts, one parquet
write of everything, dedup on (URL, TEXT), orderBy(rand()), a second parquet write.

usage: python original_spark.py INPUT_DIR OUTPUT_DIR [cores]
Prints one JSON line: {"rows_before": n, "rows_unique": n, "seconds": s}.
"""
import glob
import gzip
import json
import os
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

REFERENCE = ["SAMPLE_ID", "URL", "TEXT", "HEIGHT", "WIDTH", "LICENSE", "NSFW", "similarity"]


def first_line(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.readline().strip()


def main():
    src, out = sys.argv[1], sys.argv[2]
    cores = sys.argv[3] if len(sys.argv) > 3 else "2"
    started = time.time()
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("spark-stats")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    paths = sorted(glob.glob(os.path.join(src, "**", "*.csv"), recursive=True) + glob.glob(os.path.join(src, "**", "*.csv.gz"), recursive=True))
    groups = {}
    for p in paths:
        groups.setdefault(first_line(p), []).append(p)
    total = None
    for key, files in groups.items():
        if "similarity" not in key:
            continue
        df = spark.read.options(delimiter="|", header=True).csv(files)
        present = [c for c in df.columns if c in REFERENCE]
        df = df.select(*present)
        for c in REFERENCE:
            if c not in present:
                df = df.withColumn(c, F.lit(""))
        df = df.select(*REFERENCE)
        total = df if total is None else total.union(df)
    total = (
        total.withColumn("SAMPLE_ID", F.col("SAMPLE_ID").cast("bigint"))
        .withColumn("WIDTH", F.col("WIDTH").cast("int"))
        .withColumn("HEIGHT", F.col("HEIGHT").cast("int"))
        .withColumn("similarity", F.col("similarity").cast("double"))
    )
    total.repartition(32).write.mode("overwrite").parquet(os.path.join(out, "cah_dataframe"))
    everything = spark.read.parquet(os.path.join(out, "cah_dataframe"))
    before = everything.count()
    unique = everything.drop_duplicates(["URL", "TEXT"]).orderBy(F.rand())
    unique.repartition(32).write.mode("overwrite").parquet(os.path.join(out, "cah_dataframe_unique"))
    after = spark.read.parquet(os.path.join(out, "cah_dataframe_unique")).count()
    spark.stop()
    print(json.dumps({"rows_before": before, "rows_unique": after, "seconds": round(time.time() - started, 2)}))


if __name__ == "__main__":
    main()
