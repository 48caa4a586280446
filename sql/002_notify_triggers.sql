-- LISTEN/NOTIFY triggers the upstream Metaflow UI backend relies on: the same function and
-- trigger names (version 05092024), operations, conditions and payloads as the set the UI
-- backend creates itself, so it finds them present and creates nothing. Channel: notify.
-- Payload: {"table", "schema", "operation", "data": {<key columns of the row>}}.

CREATE OR REPLACE FUNCTION public.notify_ui_05092024_flows_v3() RETURNS trigger AS $$
DECLARE
    row_data json;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := json_build_object('flow_id', OLD.flow_id);
    ELSE
        row_data := json_build_object('flow_id', NEW.flow_id);
    END IF;
    PERFORM pg_notify('notify', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP, 'data', row_data
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_ui_05092024_flows_v3 ON public.flows_v3;
CREATE TRIGGER notify_ui_05092024_flows_v3 AFTER INSERT OR UPDATE OR DELETE ON public.flows_v3
    FOR EACH ROW EXECUTE PROCEDURE public.notify_ui_05092024_flows_v3();
ALTER TABLE public.flows_v3 ENABLE ALWAYS TRIGGER notify_ui_05092024_flows_v3;

CREATE OR REPLACE FUNCTION public.notify_ui_05092024_runs_v3() RETURNS trigger AS $$
DECLARE
    row_data json;
BEGIN
    row_data := json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'last_heartbeat_ts', NEW.last_heartbeat_ts);
    PERFORM pg_notify('notify', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP, 'data', row_data
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_ui_05092024_runs_v3 ON public.runs_v3;
CREATE TRIGGER notify_ui_05092024_runs_v3 AFTER INSERT ON public.runs_v3
    FOR EACH ROW EXECUTE PROCEDURE public.notify_ui_05092024_runs_v3();
ALTER TABLE public.runs_v3 ENABLE ALWAYS TRIGGER notify_ui_05092024_runs_v3;

CREATE OR REPLACE FUNCTION public.notify_ui_05092024_steps_v3() RETURNS trigger AS $$
DECLARE
    row_data json;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := json_build_object('flow_id', OLD.flow_id, 'run_number', OLD.run_number, 'step_name', OLD.step_name);
    ELSE
        row_data := json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'step_name', NEW.step_name);
    END IF;
    PERFORM pg_notify('notify', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP, 'data', row_data
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_ui_05092024_steps_v3 ON public.steps_v3;
CREATE TRIGGER notify_ui_05092024_steps_v3 AFTER INSERT OR UPDATE OR DELETE ON public.steps_v3
    FOR EACH ROW EXECUTE PROCEDURE public.notify_ui_05092024_steps_v3();
ALTER TABLE public.steps_v3 ENABLE ALWAYS TRIGGER notify_ui_05092024_steps_v3;

CREATE OR REPLACE FUNCTION public.notify_ui_05092024_tasks_v3() RETURNS trigger AS $$
DECLARE
    row_data json;
BEGIN
    row_data := json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'step_name', NEW.step_name, 'task_id', NEW.task_id);
    PERFORM pg_notify('notify', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP, 'data', row_data
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_ui_05092024_tasks_v3 ON public.tasks_v3;
CREATE TRIGGER notify_ui_05092024_tasks_v3 AFTER INSERT ON public.tasks_v3
    FOR EACH ROW EXECUTE PROCEDURE public.notify_ui_05092024_tasks_v3();
ALTER TABLE public.tasks_v3 ENABLE ALWAYS TRIGGER notify_ui_05092024_tasks_v3;

CREATE OR REPLACE FUNCTION public.notify_ui_05092024_metadata_v3() RETURNS trigger AS $$
DECLARE
    row_data json;
BEGIN
    row_data := json_build_object('flow_id', NEW.flow_id, 'run_number', NEW.run_number, 'step_name', NEW.step_name, 'task_id', NEW.task_id, 'field_name', NEW.field_name, 'value', NEW.value, 'tags', NEW.tags);
    PERFORM pg_notify('notify', json_build_object(
        'table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA, 'operation', TG_OP, 'data', row_data
    )::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS notify_ui_05092024_metadata_v3 ON public.metadata_v3;
CREATE TRIGGER notify_ui_05092024_metadata_v3 AFTER INSERT ON public.metadata_v3
    FOR EACH ROW WHEN (NEW.field_name = 'attempt' OR NEW.field_name = 'attempt_ok' OR NEW.field_name = 'code-package' OR NEW.field_name = 'code-package-url') EXECUTE PROCEDURE public.notify_ui_05092024_metadata_v3();
ALTER TABLE public.metadata_v3 ENABLE ALWAYS TRIGGER notify_ui_05092024_metadata_v3;
