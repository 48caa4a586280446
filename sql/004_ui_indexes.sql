-- Indexes for the UI API's task and status statements (src/mfcolab/ui/sql.py). Both are
-- partial: they hold only the rows that mark an attempt's start, end and verdict (three of the
-- ~18 metadata rows a task records, one of its artifacts), so they stay small and cost the
-- metadata service little on insert.
--
-- A run's or a step's attempts: without this, every metadata row of the run is read to find
-- these three fields (20,000 rows for a foreach of 1,000, three times over). Leading with
-- field_name after the run serves a whole run, one step, and the `end` step's verdict alike;
-- the included columns make those reads index-only.
CREATE INDEX IF NOT EXISTS mfcolab_metadata_v3_idx_attempts
    ON metadata_v3 (flow_id, run_number, field_name, step_name, task_id)
    INCLUDE (value, ts_epoch, tags, id)
    WHERE field_name IN ('attempt', 'attempt-done', 'attempt_ok');

-- The `_task_ok` artifact that ends an attempt, per run, step and task.
CREATE INDEX IF NOT EXISTS mfcolab_artifact_v3_idx_task_ok
    ON artifact_v3 (flow_id, run_number, step_name, task_id)
    INCLUDE (attempt_id, ts_epoch)
    WHERE name = '_task_ok';

-- A run's metadata of one step, newest first: the UI asks for the `start` step's on the run
-- page and once per row of the home page. Without it the planner may walk the run's metadata
-- by time and filter on the step: 20,000 rows read for the `start` step of a foreach of 1,000.
CREATE INDEX IF NOT EXISTS mfcolab_metadata_v3_idx_step_ts_id_desc
    ON metadata_v3 (flow_id, run_number, step_name, ts_epoch DESC, id DESC);
