-- The audit tables' guard on PostgreSQL (consent/stores/audit/append_only.py installs it).
--
-- Records and checkpoints are only ever added: a trigger refuses UPDATE, DELETE and TRUNCATE
-- on them whoever asks, the tables' owner included (roles already keep the application's role
-- to INSERT, see consent/stores/roles.py; the trigger is there for every other role). A
-- customer's key is only ever added or erased, never changed: UPDATE and TRUNCATE are refused.
-- The one way to erase a key is the erase function, run with its owner's rights (the erasure
-- role's, in a production set-up): the application may call it, but may not delete keys.
--
-- The markers in Python's percent-and-name form are filled in from the Python definitions.

CREATE OR REPLACE FUNCTION %(refuse)s() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
    MESSAGE = TG_OP || ' on ' || TG_TABLE_NAME || ' refused: the audit log is append-only';
END
$$;

DROP TRIGGER IF EXISTS %(audit_log)s_append_only ON %(audit_log)s;
CREATE TRIGGER %(audit_log)s_append_only BEFORE UPDATE OR DELETE ON %(audit_log)s
  FOR EACH ROW EXECUTE FUNCTION %(refuse)s();
DROP TRIGGER IF EXISTS %(audit_log)s_no_truncate ON %(audit_log)s;
CREATE TRIGGER %(audit_log)s_no_truncate BEFORE TRUNCATE ON %(audit_log)s
  FOR EACH STATEMENT EXECUTE FUNCTION %(refuse)s();

DROP TRIGGER IF EXISTS %(audit_checkpoints)s_append_only ON %(audit_checkpoints)s;
CREATE TRIGGER %(audit_checkpoints)s_append_only BEFORE UPDATE OR DELETE ON %(audit_checkpoints)s
  FOR EACH ROW EXECUTE FUNCTION %(refuse)s();
DROP TRIGGER IF EXISTS %(audit_checkpoints)s_no_truncate ON %(audit_checkpoints)s;
CREATE TRIGGER %(audit_checkpoints)s_no_truncate BEFORE TRUNCATE ON %(audit_checkpoints)s
  FOR EACH STATEMENT EXECUTE FUNCTION %(refuse)s();

DROP TRIGGER IF EXISTS %(customer_keys)s_never_changed ON %(customer_keys)s;
CREATE TRIGGER %(customer_keys)s_never_changed BEFORE UPDATE ON %(customer_keys)s
  FOR EACH ROW EXECUTE FUNCTION %(refuse)s();
DROP TRIGGER IF EXISTS %(customer_keys)s_no_truncate ON %(customer_keys)s;
CREATE TRIGGER %(customer_keys)s_no_truncate BEFORE TRUNCATE ON %(customer_keys)s
  FOR EACH STATEMENT EXECUTE FUNCTION %(refuse)s();

-- Erase one customer's key; whether there was one. SECURITY DEFINER with a fixed search path,
-- as PostgreSQL's documentation asks of such functions.
CREATE OR REPLACE FUNCTION %(erase_key)s(p_customer_id text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = %(schema)s, pg_temp AS $$
DECLARE
  v_erased integer;
BEGIN
  DELETE FROM %(customer_keys)s WHERE customer_id = p_customer_id;
  GET DIAGNOSTICS v_erased = ROW_COUNT;
  RETURN v_erased > 0;
END
$$;
REVOKE ALL ON FUNCTION %(erase_key)s(text) FROM PUBLIC;
