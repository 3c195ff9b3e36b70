//! What this binary is: version and build information (from `build.rs`), for
//! `sallyport --version` and the `sallyport_build_info` metric.

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("SALLYPORT_COMMIT");
/// The compiler's version.
pub const RUSTC: &str = env!("SALLYPORT_RUSTC");
/// The target triple.
pub const TARGET: &str = env!("SALLYPORT_TARGET");
/// The cargo profile (`release`, `debug`).
pub const PROFILE: &str = env!("SALLYPORT_PROFILE");
/// `sallyport --version`'s text after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SALLYPORT_COMMIT"),
    ", rustc ",
    env!("SALLYPORT_RUSTC"),
    ", ",
    env!("SALLYPORT_TARGET"),
    ", ",
    env!("SALLYPORT_PROFILE"),
    ")"
);
