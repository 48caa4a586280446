-- The upstream Metaflow metadata schema (*_v3 tables) in its final state: every upstream
-- migration up to 20260706000003 folded into one file, with the same table, column,
-- constraint and index names, so the upstream services and migration tooling accept it.
-- goose-versions: 1 20200603104139 20201002000616 20210202145952 20210260056859 20211202100726 20220503175500 20230118020300 20260615000000 20260706000000 20260706000001 20260706000002 20260706000003

CREATE TABLE IF NOT EXISTS flows_v3 (
    flow_id     VARCHAR(255) PRIMARY KEY,
    user_name   VARCHAR(255),
    ts_epoch    BIGINT NOT NULL,
    tags        JSONB,
    system_tags JSONB
);

CREATE TABLE IF NOT EXISTS runs_v3 (
    flow_id           VARCHAR(255) NOT NULL,
    run_number        SERIAL NOT NULL,
    user_name         VARCHAR(255),
    ts_epoch          BIGINT NOT NULL,
    tags              JSONB,
    system_tags       JSONB,
    run_id            VARCHAR(255),
    last_heartbeat_ts BIGINT,
    PRIMARY KEY (flow_id, run_number),
    FOREIGN KEY (flow_id) REFERENCES flows_v3 (flow_id),
    CONSTRAINT runs_v3_flow_id_run_id_key UNIQUE (flow_id, run_id)
);

CREATE TABLE IF NOT EXISTS steps_v3 (
    flow_id     VARCHAR(255) NOT NULL,
    run_number  BIGINT NOT NULL,
    step_name   VARCHAR(255) NOT NULL,
    user_name   VARCHAR(255),
    ts_epoch    BIGINT NOT NULL,
    tags        JSONB,
    system_tags JSONB,
    run_id      VARCHAR(255),
    PRIMARY KEY (flow_id, run_number, step_name),
    FOREIGN KEY (flow_id, run_number) REFERENCES runs_v3 (flow_id, run_number),
    CONSTRAINT steps_v3_flow_id_run_id_step_name_key UNIQUE (flow_id, run_id, step_name)
);

CREATE TABLE IF NOT EXISTS tasks_v3 (
    flow_id           VARCHAR(255) NOT NULL,
    run_number        BIGINT NOT NULL,
    step_name         VARCHAR(255) NOT NULL,
    task_id           BIGSERIAL PRIMARY KEY,
    user_name         VARCHAR(255),
    ts_epoch          BIGINT NOT NULL,
    tags              JSONB,
    system_tags       JSONB,
    run_id            VARCHAR(255),
    task_name         VARCHAR(255),
    last_heartbeat_ts BIGINT,
    FOREIGN KEY (flow_id, run_number, step_name) REFERENCES steps_v3 (flow_id, run_number, step_name),
    CONSTRAINT tasks_v3_flow_id_run_number_step_name_task_name_key UNIQUE (flow_id, run_number, step_name, task_name)
);

CREATE TABLE IF NOT EXISTS metadata_v3 (
    flow_id     VARCHAR(255) NOT NULL,
    run_number  BIGINT NOT NULL,
    step_name   VARCHAR(255) NOT NULL,
    task_id     BIGINT NOT NULL,
    id          BIGSERIAL NOT NULL,
    field_name  VARCHAR(255) NOT NULL,
    value       TEXT NOT NULL,
    type        VARCHAR(255) NOT NULL,
    user_name   VARCHAR(255),
    ts_epoch    BIGINT NOT NULL,
    tags        JSONB,
    system_tags JSONB,
    run_id      VARCHAR(255),
    task_name   VARCHAR(255),
    PRIMARY KEY (id, flow_id, run_number, step_name, task_id, field_name)
);

CREATE TABLE IF NOT EXISTS artifact_v3 (
    flow_id      VARCHAR(255) NOT NULL,
    run_number   BIGINT NOT NULL,
    step_name    VARCHAR(255) NOT NULL,
    task_id      BIGINT NOT NULL,
    name         VARCHAR(255) NOT NULL,
    location     VARCHAR(255) NOT NULL,
    ds_type      VARCHAR(255) NOT NULL,
    sha          VARCHAR(255),
    type         VARCHAR(255),
    content_type VARCHAR(255),
    user_name    VARCHAR(255),
    attempt_id   SMALLINT NOT NULL,
    ts_epoch     BIGINT NOT NULL,
    tags         JSONB,
    system_tags  JSONB,
    run_id       VARCHAR(255),
    task_name    VARCHAR(255),
    PRIMARY KEY (flow_id, run_number, step_name, task_id, attempt_id, name)
);

CREATE INDEX IF NOT EXISTS flows_v3_idx_ts_flow_desc ON flows_v3 (ts_epoch DESC, flow_id DESC);

CREATE INDEX IF NOT EXISTS runs_v3_idx_ts_epoch ON runs_v3 (ts_epoch);
CREATE INDEX IF NOT EXISTS runs_v3_idx_gin_tags_combined ON runs_v3 USING GIN ((tags || system_tags));
CREATE INDEX IF NOT EXISTS runs_v3_idx_flow_id_asc_ts_epoch_desc ON runs_v3 (flow_id ASC, ts_epoch DESC);
CREATE INDEX IF NOT EXISTS runs_v3_idx_user_asc_ts_epoch_desc ON runs_v3 (
    (CASE WHEN system_tags ? ('user:' || user_name) THEN user_name ELSE NULL END) ASC, ts_epoch DESC
);
CREATE INDEX IF NOT EXISTS runs_v3_idx_epoch_ts_desc ON runs_v3 (ts_epoch DESC);
CREATE INDEX IF NOT EXISTS runs_v3_idx_str_ids_primary_key_v2 ON runs_v3 (flow_id, run_id);
CREATE INDEX IF NOT EXISTS runs_v3_idx_flow_ts_runnum_desc ON runs_v3 (flow_id, ts_epoch DESC, run_number DESC);

CREATE INDEX IF NOT EXISTS steps_v3_idx_str_ids_primary_key_v2 ON steps_v3 (flow_id, run_id, step_name);

CREATE INDEX IF NOT EXISTS tasks_v3_idx_flow_id_run_id_step_name_task_name_v2
    ON tasks_v3 (flow_id, run_id, step_name, task_name);
CREATE INDEX IF NOT EXISTS tasks_v3_idx_flow_run_step_ts_task_desc
    ON tasks_v3 (flow_id, run_number, step_name, ts_epoch DESC, task_id DESC);

CREATE INDEX IF NOT EXISTS metadata_v3_akey ON metadata_v3 (flow_id, run_number, step_name, task_id, field_name);
CREATE INDEX IF NOT EXISTS metadata_v3_idx_str_ids_a_key
    ON metadata_v3 (flow_id, run_id, step_name, task_name, field_name);
CREATE INDEX IF NOT EXISTS metadata_v3_idx_str_ids_a_key_with_task_id
    ON metadata_v3 (flow_id, run_id, step_name, task_id, field_name);
CREATE INDEX IF NOT EXISTS metadata_v3_idx_flow_run_ts_id_desc ON metadata_v3 (flow_id, run_number, ts_epoch DESC, id DESC);

CREATE INDEX IF NOT EXISTS artifact_v3_idx_str_ids_primary_key_v2
    ON artifact_v3 (flow_id, run_id, step_name, task_name, attempt_id, name);
CREATE INDEX IF NOT EXISTS artifact_v3_idx_str_ids_primary_key_with_task_id
    ON artifact_v3 (flow_id, run_id, step_name, task_id, attempt_id, name);
CREATE INDEX IF NOT EXISTS artifact_v3_idx_latest_attempt
    ON artifact_v3 (flow_id, run_number, task_id, name, ts_epoch DESC);
