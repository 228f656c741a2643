-- The audit log's append function (consent/stores/audit/append_function.py makes it).
--
-- One call writes a group of decision records in its own transaction: it takes the chain's
-- lock, reads the head, finds or makes each customer's key, and computes the pseudonyms and the
-- hashes with the definitions of consent/rules/chain.py (``pseudonym``, ``hash_record``).
-- ``verify`` recomputes every hash in Python from the stored text, so the two definitions are
-- checked against each other on every verification. The leaf hash is ``record_leaf_hash``:
-- the same header and body after a zero byte (RFC 9162's leaf prefix).
--
-- The pseudonym is HMAC-SHA256 (RFC 2104, 64-byte blocks) built from the server's own
-- ``sha256``, so no extension is needed: the key, zero-padded to a block (keys longer than a
-- block are hashed first, as the RFC says; ours are 32 bytes), XORed with each pad (0x36 inner,
-- 0x5c outer) as one 512-bit string, whose bytes ``varbit_send`` gives after a 4-byte length.
-- It is written as one expression rather than a SQL function of its own: a function call per
-- record would cost more than the rest of the append.
--
-- The markers in Python's percent-and-name form are filled in from the Python definitions
-- before the text is run (the function's name, the tables' names, the lock's namespace, the
-- chain's genesis and pseudonym form), so each value is declared once. The name is versioned:
-- changing what the function computes means a new name, so processes of both versions can run.

CREATE OR REPLACE FUNCTION %(function)s(
  p_lock_timeout text, p_recorded_at timestamptz, p_recorded_at_text text,
  p_decision_ids text[], p_decision_ids_json text[], p_customers text[], p_new_keys bytea[],
  p_placeholders text[], p_bodies text[]
) RETURNS TABLE (seq bigint, prev_hash text, record_hash text, customer_ref text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_seq bigint;
  v_prev text;
  v_key bytea;
  v_ref text;
  v_body text;
  v_header text;
  v_data bytea;
BEGIN
  PERFORM set_config('lock_timeout', p_lock_timeout, true);
  PERFORM pg_advisory_xact_lock(%(lock_namespace)s,
    CAST(CAST(CAST('%(audit_log)s' AS regclass) AS oid) AS integer));
  SELECT a.seq, a.record_hash INTO v_seq, v_prev
    FROM %(audit_log)s AS a ORDER BY a.seq DESC LIMIT 1;
  IF NOT FOUND THEN
    v_seq := 0;
    v_prev := '%(genesis)s';
  END IF;
  FOR i IN 1 .. coalesce(array_length(p_decision_ids, 1), 0) LOOP
    -- Under the lock, like an erasure: a key erased before this point is never used again.
    SELECT k.key INTO v_key FROM %(customer_keys)s AS k WHERE k.customer_id = p_customers[i];
    IF NOT FOUND THEN
      INSERT INTO %(customer_keys)s (customer_id, key, created_at)
        VALUES (p_customers[i], p_new_keys[i], p_recorded_at)
        ON CONFLICT DO NOTHING;
      SELECT k.key INTO STRICT v_key
        FROM %(customer_keys)s AS k WHERE k.customer_id = p_customers[i];
    END IF;
    v_ref := '%(pseudonym_prefix)s' || left(encode(
      sha256(
        substr(varbit_send(
          ('x' || rpad(encode(
            CASE WHEN length(v_key) > 64 THEN sha256(v_key) ELSE v_key END, 'hex'),
            128, '0'))::bit(512)
          # x'%(outer_pad)s'), 5)
        || sha256(
          substr(varbit_send(
            ('x' || rpad(encode(
              CASE WHEN length(v_key) > 64 THEN sha256(v_key) ELSE v_key END, 'hex'),
              128, '0'))::bit(512)
            # x'%(inner_pad)s'), 5)
          || convert_to(p_customers[i], 'UTF8'))),
      'hex'),
      %(pseudonym_hex_digits)s);
    v_body := replace(p_bodies[i], p_placeholders[i], v_ref);
    v_seq := v_seq + 1;
    -- canonical(): sorted keys, no spaces; the decision id comes escaped by the caller.
    v_header := '{"customer_ref":"' || v_ref || '","decision_id":' || p_decision_ids_json[i]
      || ',"recorded_at":"' || p_recorded_at_text || '","seq":' || v_seq || '}';
    seq := v_seq;
    prev_hash := v_prev;
    -- Header and body encoded once, for the chain hash and the leaf alike.
    v_data := convert_to(v_header || E'\n' || v_body, 'UTF8');
    record_hash := 'sha256:' || encode(sha256(convert_to(v_prev || E'\n', 'UTF8') || v_data),
      'hex');
    customer_ref := v_ref;
    INSERT INTO %(audit_log)s
      (seq, decision_id, recorded_at, customer_ref, prev_hash, record_hash, body, leaf_hash)
      VALUES (v_seq, p_decision_ids[i], p_recorded_at, v_ref, v_prev, record_hash, v_body,
        sha256('\x00'::bytea || v_data));
    RETURN NEXT;
    v_prev := record_hash;
  END LOOP;
END
$$
