//! The `baton` commands that have a module of their own.

pub mod follow;
pub mod session;

pub(crate) use super::EXIT_INVALID;
