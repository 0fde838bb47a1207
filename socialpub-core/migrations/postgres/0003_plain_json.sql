-- Documents as `json` (their text, checked on the way in) instead of `jsonb` (parsed into a
-- binary tree on the way in, and printed back to text on the way out).
--
-- socialpub writes and reads these documents whole and never queries inside them in SQL, so
-- jsonb's parse on every write and print on every read was work for nothing: an outcome
-- writes a receipt and an event (about 550 bytes of JSON), and a claim reads the post back.
-- `json` keeps the text as written and still rejects text that is not JSON. Applications that
-- query the outbox can use the same operators (`->`, `->>`) on `json`, or cast to `jsonb`.

ALTER TABLE socialpub_deliveries
    ALTER COLUMN post TYPE JSON USING post::JSON,
    ALTER COLUMN checkpoint TYPE JSON USING checkpoint::JSON,
    ALTER COLUMN receipt TYPE JSON USING receipt::JSON,
    ALTER COLUMN last_error TYPE JSON USING last_error::JSON;

ALTER TABLE socialpub_outbox
    ALTER COLUMN payload TYPE JSON USING payload::JSON;
