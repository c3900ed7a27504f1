//! voxq shared library.

pub mod audio;
pub mod domain;
