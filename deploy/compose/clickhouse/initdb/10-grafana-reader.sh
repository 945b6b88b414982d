#!/bin/bash
# Runs once, on the first start of an empty ClickHouse data volume (the image's initdb hook):
# a read-only user for Grafana's ClickHouse data source, limited to the causelog database.
set -euo pipefail
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${GRAFANA_CLICKHOUSE_PASSWORD}'
    SETTINGS readonly = 1, max_execution_time = 60, max_result_rows = 100000, result_overflow_mode = 'break';
GRANT SELECT ON causelog.* TO grafana;
SQL
