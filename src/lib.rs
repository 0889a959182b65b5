//! The podnet binaries' shared code: `podnetctl`'s commands.
pub mod ctl;
