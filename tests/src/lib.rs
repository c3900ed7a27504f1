//! End-to-end tests of the voxq service (API, queue, workers, S3, PostgreSQL) live in
//! this crate's `tests/` folder. The service is the next step; the local engine's
//! end-to-end tests are in `worker/tests/`.
