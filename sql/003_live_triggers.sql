-- Notifications for the ends of task attempts that the UI triggers (002) leave out: the
-- `attempt-done` metadata and the `_task_ok` artifact (the only end marks a `_parameters`
-- task or an old client writes). Their own channel, mfcolab_live, so the upstream UI backend
-- never receives a payload it does not expect. Payload as in 002: {"table", "schema",
-- "operation", "data": {<keys of the row>}}.

CREATE OR REPLACE FUNCTION public.mfcolab_live_attempt_done() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('mfcolab_live', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP,
        'data', json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'step_name', NEW.step_name,
                                  'task_id', NEW.task_id, 'field_name', NEW.field_name, 'value', NEW.value,
                                  'tags', NEW.tags)
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS mfcolab_live_attempt_done ON public.metadata_v3;
CREATE TRIGGER mfcolab_live_attempt_done AFTER INSERT ON public.metadata_v3
    FOR EACH ROW WHEN (NEW.field_name = 'attempt-done') EXECUTE PROCEDURE public.mfcolab_live_attempt_done();

CREATE OR REPLACE FUNCTION public.mfcolab_live_task_ok() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('mfcolab_live', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP,
        'data', json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'step_name', NEW.step_name,
                                  'task_id', NEW.task_id, 'attempt_id', NEW.attempt_id)
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS mfcolab_live_task_ok ON public.artifact_v3;
CREATE TRIGGER mfcolab_live_task_ok AFTER INSERT ON public.artifact_v3
    FOR EACH ROW WHEN (NEW.name = '_task_ok') EXECUTE PROCEDURE public.mfcolab_live_task_ok();
