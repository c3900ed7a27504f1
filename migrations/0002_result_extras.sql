-- Scores, summary, rubric and per-stage usage of each result version.
ALTER TABLE job_results
    ADD COLUMN scores  jsonb,
    ADD COLUMN summary jsonb,
    ADD COLUMN rubric  jsonb,
    ADD COLUMN usage   jsonb NOT NULL DEFAULT '{}'::jsonb;
