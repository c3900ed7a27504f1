-- The W3C `traceparent` of the request that created a job (or its batch): the worker's
-- spans for the job carry its trace id.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE batches ADD COLUMN traceparent text;
