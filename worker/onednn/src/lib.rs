//! Links the prebuilt oneDNN 3.1 for CTranslate2 (see `build.rs`); no Rust API.
