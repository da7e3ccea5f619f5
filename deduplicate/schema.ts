// The output schema of stage 2 (contracts.md section 2) and the casts that fill it.
//
// Casts follow Spark's non-ANSI string casts, which the original job used: an integer column takes
// `[+-]digits[.digits]` (surrounding whitespace allowed) and truncates the fraction ("12.7" -> 12,
// "480.0" -> 480), anything else or out of range is null. DuckDB's own TRY_CAST rounds ("12.7" ->
// 13) and accepts "1e3", "0x10" and "1_000", so the integer casts are written out here. Values
// already in plain form (nearly all of them) take a fast path: an integer whose text is exactly
// what DuckDB prints for it, a double of digits and one optional dot. trim() with a character set
// is the costliest step (about 1 s per column per 3M rows), so it runs only on values that miss.

export type OutputType = 'BIGINT' | 'INTEGER' | 'DOUBLE' | 'VARCHAR';

export interface OutputColumn {
  name: string;
  type: OutputType;
}

export const OUTPUT_COLUMNS: readonly OutputColumn[] = [
  { name: 'SAMPLE_ID', type: 'BIGINT' },
  { name: 'URL', type: 'VARCHAR' },
  { name: 'TEXT', type: 'VARCHAR' },
  { name: 'HEIGHT', type: 'INTEGER' },
  { name: 'WIDTH', type: 'INTEGER' },
  { name: 'LICENSE', type: 'VARCHAR' },
  { name: 'NSFW', type: 'VARCHAR' },
  { name: 'similarity', type: 'DOUBLE' },
];

export const OUTPUT_COLUMN_NAMES = OUTPUT_COLUMNS.map((c) => c.name);

/** Columns whose cast can fail, in output order; each gets a bit in the per-row failure mask. */
export const CAST_COLUMNS = OUTPUT_COLUMNS.filter((c) => c.type !== 'VARCHAR');

/** Whitespace and control characters Spark strips before a numeric cast. */
const SPACE = "' \t\n\r\f\v'";

/**
 * SQL macros installed once per connection: `spark_int(v)`, `spark_bigint(v)`, `spark_double(v)`
 * and `cast_failed(v, result)` (a value was there but the cast gave null; blank is not a failure).
 * cast_failed is a CASE because AND in a projection evaluates every operand on every row, and the
 * trim() would then run on all values instead of on the few null results.
 */
export const CAST_MACROS_SQL = `
CREATE OR REPLACE MACRO spark_integral(v) AS (
  CASE WHEN regexp_full_match(trim(v, ${SPACE}), '[+-]?[0-9]*(\\.[0-9]*)?')
        AND NOT regexp_full_match(trim(v, ${SPACE}), '[+-]?')
  THEN regexp_extract(trim(v, ${SPACE}), '^([+-]?)0*([0-9]*)', ['sign', 'digits'])
  END
);
CREATE OR REPLACE MACRO spark_integral_text(parts) AS (
  CASE WHEN parts IS NULL THEN NULL WHEN parts.digits = '' THEN '0' ELSE parts.sign || parts.digits END
);
CREATE OR REPLACE MACRO spark_int(v) AS (
  CASE WHEN TRY_CAST(v AS INTEGER)::VARCHAR = v THEN TRY_CAST(v AS INTEGER)
       ELSE TRY_CAST(spark_integral_text(spark_integral(v)) AS INTEGER) END
);
CREATE OR REPLACE MACRO spark_bigint(v) AS (
  CASE WHEN TRY_CAST(v AS BIGINT)::VARCHAR = v THEN TRY_CAST(v AS BIGINT)
       ELSE TRY_CAST(spark_integral_text(spark_integral(v)) AS BIGINT) END
);
CREATE OR REPLACE MACRO spark_double(v) AS (
  CASE WHEN regexp_full_match(v, '[0-9]+(\\.[0-9]*)?|\\.[0-9]+') THEN TRY_CAST(v AS DOUBLE)
       WHEN regexp_full_match(lower(trim(v, ${SPACE})), '[+-]?(inf|infinity|nan)') THEN TRY_CAST(trim(v, ${SPACE}) AS DOUBLE)
       WHEN regexp_full_match(trim(v, ${SPACE}), '[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?[dDfF]?')
       THEN TRY_CAST(rtrim(trim(v, ${SPACE}), 'dDfF') AS DOUBLE) END
);
CREATE OR REPLACE MACRO cast_failed(v, result) AS (
  CASE WHEN result IS NOT NULL OR v IS NULL THEN false ELSE trim(v, ${SPACE}) <> '' END
);
`;

/** The SQL expression that casts raw text column `raw` to the output type. */
export function castExpression(type: OutputType, raw: string): string {
  switch (type) {
    case 'BIGINT': return `spark_bigint(${raw})`;
    case 'INTEGER': return `spark_int(${raw})`;
    case 'DOUBLE': return `spark_double(${raw})`;
    case 'VARCHAR': return raw;
  }
}
